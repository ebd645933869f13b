"""The dashboard's queries on real databases (SQLite and Postgres): call statistics, per-caller conversation
and per-turn groupings, and the conversation list's search, sorts and pages."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Connection, select

from gateway.reports import CallStats, Group, UsageQuery
from gateway.store.browse import browse_conversations
from gateway.store.conversations import create_conversation, update_conversation
from gateway.store.database import Database
from gateway.store.tables import UI_SESSIONS
from gateway.store.ui_sessions import delete_session, find_session, insert_session
from gateway.store.usage import call_stats, usage_groups
from tests.helpers import insert_log_rows, migrated_database

LATER = 2_000_000.0


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated_database(database_url) as database:
        yield database


def attempt(owner: str, conversation: str | None, **values: Any) -> dict[str, Any]:
    base = {
        "owner": owner,
        "conversation_id": conversation,
        "request_id": secrets.token_hex(8),
        "endpoint": "/v1/chat/completions",
        "model": "m",
        "response_model": "m",
        "stream": False,
        "status": 200,
        "latency_ms": 10.0,
        "prompt_tokens": 10,
        "completion_tokens": 1,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "history_tokens": 0,
        "cost_pusd": 1000,
        "history_cost_pusd": 0,
        "created_at": 1_000_000.0,
    }
    return base | values


def record(connection: Connection, *rows: dict[str, Any]) -> None:
    for values in rows:
        insert_log_rows(connection, values)


async def test_call_stats_count_failures_and_take_nearest_rank_latencies(db: Database) -> None:
    owner, other = secrets.token_hex(32), secrets.token_hex(32)

    def unit(connection: Connection) -> tuple[CallStats, CallStats, CallStats]:
        for n in range(1, 21):  # latencies 1..20 ms, two of them failed
            record(connection, attempt(owner, None, latency_ms=float(n), status=500 if n in (3, 7) else 200))
        record(connection, attempt(other, None, latency_ms=999.0, status=502))
        return (
            call_stats(connection, UsageQuery(owner=owner)),
            call_stats(connection, UsageQuery(until=LATER)),  # this test's rows are the only earlier ones
            call_stats(connection, UsageQuery(owner=secrets.token_hex(32))),
        )

    stats, everyone, nobody = await db.run(unit)
    assert (stats.requests, stats.errors, stats.latency_p50_ms, stats.latency_p95_ms) == (20, 2, 10.0, 19.0)
    assert (everyone.requests, everyone.errors, everyone.latency_p95_ms) == (21, 3, 20.0)
    assert (nobody.requests, nobody.latency_p50_ms, nobody.error_rate) == (0, None, None)


async def test_conversations_are_grouped_per_caller_and_turns_per_turn(db: Database) -> None:
    a, b = secrets.token_hex(32), secrets.token_hex(32)

    # The database is shared by the module: these rows are the only ones from LATER on.
    def unit(connection: Connection) -> tuple[list[Group], list[Group]]:
        record(
            connection,
            attempt(a, "same", turn=1, cost_pusd=10, created_at=LATER),
            attempt(a, "same", turn=2, cost_pusd=20, created_at=LATER),
            attempt(a, "same", turn=None, status=500, cost_pusd=None, created_at=LATER),
            attempt(b, "same", turn=1, cost_pusd=40, created_at=LATER),
            attempt(b, None, cost_pusd=80, created_at=LATER),
        )
        return (
            usage_groups(connection, UsageQuery(group_by="caller_conversation", since=LATER)),
            usage_groups(connection, UsageQuery(owner=a, conversation_id="same", group_by="turn")),
        )

    groups, turns = await db.run(unit)
    costs = {g.key: g.total.cost_pusd for g in groups}
    assert costs == {f"{a}:same": 30, f"{b}:same": 40, None: 80}
    assert {g.key: (g.total.requests, g.total.cost_pusd) for g in turns} == {
        "1": (1, 10),
        "2": (1, 20),
        None: (1, 0),
    }


async def test_browse_searches_sorts_and_pages_one_callers_conversations(db: Database) -> None:
    a, b = secrets.token_hex(32), secrets.token_hex(32)

    def unit(connection: Connection) -> None:
        for n, (cid, messages) in enumerate([("Cheap_1", 9), ("dear-2", 1), ("mid_3", 5), ("x%_4", 0)]):
            conversation = create_conversation(connection, a, cid, {}, 100.0 + n)
            update_conversation(connection, conversation, {"message_count": messages}, 100.0 + n)
        create_conversation(connection, b, "dear-b", {}, 500.0)
        record(
            connection,
            attempt(a, "dear-2", cost_pusd=900),
            attempt(a, "mid_3", cost_pusd=500),
            attempt(a, "Cheap_1", cost_pusd=100),
            attempt(b, "Cheap_1", cost_pusd=10_000),  # another caller's namesake
            attempt(a, "mid_3", cost_pusd=5000, conversation_deleted=True),
        )

    await db.run(unit)

    async def ids(owner: str | None, **options: Any) -> tuple[list[str], int]:
        found = {"search": None, "sort": "updated", "offset": 0, "limit": 10} | options
        rows, total = await db.run(lambda c: browse_conversations(c, owner, **found))
        return [r.id for r in rows], total

    assert await ids(a) == (["x%_4", "mid_3", "dear-2", "Cheap_1"], 4)
    assert await ids(a, sort="cost") == (["dear-2", "mid_3", "Cheap_1", "x%_4"], 4)
    assert await ids(a, sort="length") == (["Cheap_1", "mid_3", "dear-2", "x%_4"], 4)
    assert await ids(a, search="CHEAP") == (["Cheap_1"], 1)
    assert await ids(a, search="%") == (["x%_4"], 1)  # a literal %, not a wildcard
    assert await ids(a, search="_") == (["x%_4", "mid_3", "Cheap_1"], 3)
    assert await ids(a, sort="cost", offset=1, limit=2) == (["mid_3", "Cheap_1"], 4)
    assert await ids(None, search="dear") == (["dear-b", "dear-2"], 2)


async def test_sessions_are_found_until_they_expire_and_a_sign_in_clears_expired_ones(db: Database) -> None:
    identity = secrets.token_hex(32)

    def store(connection: Connection) -> None:
        insert_session(connection, "a" * 64, identity, now=100.0, expires_at=200.0)
        insert_session(connection, "b" * 64, identity, now=150.0, expires_at=400.0)

    def check(connection: Connection) -> None:
        assert find_session(connection, "a" * 64, now=199.0) == identity
        assert find_session(connection, "a" * 64, now=200.0) is None  # expired
        assert find_session(connection, "c" * 64, now=150.0) is None
        insert_session(connection, "c" * 64, identity, now=300.0, expires_at=500.0)  # drops "a"
        remaining = connection.execute(
            select(UI_SESSIONS.c.token_hash).order_by(UI_SESSIONS.c.token_hash)
        ).all()
        assert [row[0][0] for row in remaining] == ["b", "c"]
        delete_session(connection, "b" * 64)
        assert find_session(connection, "b" * 64, now=301.0) is None
        assert find_session(connection, "c" * 64, now=301.0) == identity

    await db.run(store)
    await db.run(check)
