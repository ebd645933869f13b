"""What a stateful turn asks of Postgres: two statements (lease + read, write + release), no liveness ping."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import event

from gateway.app import create_app
from gateway.config import Settings
from gateway.mock_upstream.app import create_mock_app
from tests.conftest import POSTGRES_ENV

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"set {POSTGRES_ENV} to run"),
]


class Statements:
    """Every statement the gateway's asyncpg connections run (asyncpg's query loggers)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.counting = False

    def log(self, record: Any) -> None:
        """asyncpg query logger: remember the statement while counting."""
        if self.counting:
            self.seen.append(" ".join(record.query.split()))

    def attach(self, _dbapi: Any, record: Any, _proxy: Any) -> None:
        """Pool checkout hook: log the statements of every connection handed out."""
        connection = record.driver_connection
        if self.log not in connection._query_loggers:
            connection.add_query_logger(self.log)


@pytest.fixture
async def harness(postgres_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Statements]]:
    settings = Settings(database_url=postgres_url, upstream_url="http://upstream/v1")
    app = create_app(settings, transport=httpx.ASGITransport(app=create_mock_app()))
    statements = Statements()
    async with LifespanManager(app) as manager:
        engine = manager._state["services"].db.engine
        assert not engine.sync_engine.pool._pre_ping  # no liveness round trip per checkout
        event.listen(engine.sync_engine, "checkout", statements.attach)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client, statements


async def turn(client: httpx.AsyncClient, conversation_id: str, text: str, **headers: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/chat/completions",
        headers={"Authorization": "Bearer sk-round-trips", "X-Conversation-Id": conversation_id, **headers},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
    )
    assert response.status_code == 200, response.text
    for _ in range(3):  # asyncpg calls its query loggers soon after the query, not during it
        await asyncio.sleep(0)
    body: dict[str, Any] = response.json()
    return body


async def test_a_new_conversation_costs_two_statements(
    harness: tuple[httpx.AsyncClient, Statements],
) -> None:
    client, statements = harness
    await turn(client, "warm-up", "hello")  # the first checkout connects and prepares
    statements.counting = True
    await turn(client, "fresh", "hello")
    statements.counting = False
    assert len(statements.seen) == 2, [q[:80] for q in statements.seen]
    take, store = statements.seen
    assert "INSERT INTO conversation_leases" in take and "FROM messages" in take
    assert "INSERT INTO conversations" in store and "DELETE FROM conversation_leases" in store


async def test_an_existing_conversation_costs_two_statements(
    harness: tuple[httpx.AsyncClient, Statements],
) -> None:
    client, statements = harness
    for n in range(10):
        await turn(client, "long", f"message {n}")
    statements.counting = True
    budget = {"X-Max-History-Messages": "6", "X-History-Strategy": "sliding"}
    reply = await turn(client, "long", "and now?", **budget)
    statements.counting = False
    assert reply["choices"][0]["message"]["content"] == "[7 messages] and now?"
    assert len(statements.seen) == 2, statements.seen
    assert "UPDATE conversations" in statements.seen[1]


async def test_a_stable_window_between_cuts_costs_two_statements(
    harness: tuple[httpx.AsyncClient, Statements],
) -> None:
    client, statements = harness
    budget = {"X-Max-History-Messages": "6", "X-History-Strategy": "stable"}
    for n in range(6):  # past the limit: a cut (read and written as a unit of work) moves the start
        await turn(client, "stable", f"message {n}", **budget)
    statements.seen.clear()
    statements.counting = True
    reply = await turn(client, "stable", "and now?", **budget)
    statements.counting = False
    assert reply["choices"][0]["message"]["content"].endswith("and now?")
    assert len(statements.seen) == 2, [q[:80] for q in statements.seen]


async def test_the_turn_that_cuts_a_stable_window_costs_two_statements_too(
    harness: tuple[httpx.AsyncClient, Statements],
) -> None:
    client, statements = harness
    await turn(client, "warm-up", "hello")  # the first checkout connects and prepares
    budget = {"X-Max-History-Messages": "6", "X-History-Strategy": "stable"}
    sent, counts = [], []
    for n in range(8):
        statements.seen.clear()
        statements.counting = True
        reply = await turn(client, "cutting", f"message {n}", **budget)
        statements.counting = False
        counts.append(len(statements.seen))
        sent.append(int(reply["choices"][0]["message"]["content"].split()[0].lstrip("[")))
    # the window grows by a turn each time until it would pass the limit, then the cut shrinks it
    assert sent == [1, 3, 5, 7, 3, 5, 7, 3], sent
    assert counts == [2] * 8, counts


async def test_connections_the_server_closed_are_replaced_without_an_error(
    harness: tuple[httpx.AsyncClient, Statements], postgres_url: str
) -> None:
    client, _ = harness
    for n in range(3):
        await turn(client, "survivor", f"before {n}")
    # every pooled connection of the gateway is closed by the server (as a restart or an idle timeout would)
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        terminated = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert terminated >= 1
    for n in range(3):  # no 503: dead connections are replaced at checkout, or the statement is retried
        reply = await turn(client, "survivor", f"after {n}")
        assert reply["choices"][0]["message"]["content"] == f"[{7 + 2 * n} messages] after {n}"
