"""Postgres: the hot path's statements keep a few pooled connections checked out (store/pg_driver.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.database import create_engine
from gateway.store.pg_driver import KEPT_STATEMENTS, RawConnections
from tests.conftest import POSTGRES_ENV

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"set {POSTGRES_ENV} to run"),
]


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=10)  # 20 connections: 10 may be kept
    try:
        yield engine
    finally:
        await engine.dispose()


def count_checkouts(engine: AsyncEngine) -> list[int]:
    checkouts: list[int] = []
    event.listen(engine.sync_engine, "checkout", lambda *_: checkouts.append(1))
    return checkouts


async def backend(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT pg_backend_pid()"))


async def test_statements_one_after_another_take_the_pool_once_per_kept_run(engine: AsyncEngine) -> None:
    connections = RawConnections(engine)
    checkouts = count_checkouts(engine)
    pids = {await connections.run(backend, idempotent=True) for _ in range(2 * KEPT_STATEMENTS + 1)}
    assert len(checkouts) == 3  # each kept connection runs KEPT_STATEMENTS, then goes back to the pool
    assert len(pids) == 1  # the pool handed the same connection out again
    assert engine.sync_engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await connections.close()
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_concurrent_statements_keep_at_most_half_of_the_pool(engine: AsyncEngine) -> None:
    connections = RawConnections(engine)

    async def slow(connection: asyncpg.Connection) -> Any:
        return await connection.fetchval("SELECT pg_sleep(0.05)")

    # 16 of 20 out at once: the first to finish finds more than three quarters out and goes back, the next
    # ten are kept (half the pool), the rest go back.
    await asyncio.gather(*(connections.run(slow, idempotent=True) for _ in range(16)))
    assert engine.sync_engine.pool.checkedout() == 10  # type: ignore[attr-defined]
    # SQLAlchemy's own statements find the other half, at once
    async with asyncio.timeout(5):
        sessions = [await engine.connect() for _ in range(10)]
        for session in sessions:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        for session in sessions:
            await session.close()
    await connections.close()
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    small = create_engine(str(engine.url.render_as_string(hide_password=False)), pool_size=1)  # 2 in all
    try:
        none_kept = RawConnections(small)
        await none_kept.run(backend, idempotent=True)
        assert small.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await small.dispose()


async def test_a_kept_connection_the_server_closed_is_replaced_before_use(
    engine: AsyncEngine, postgres_url: str
) -> None:
    connections = RawConnections(engine)
    first = await connections.run(backend, idempotent=False)
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
    finally:
        await admin.close()
    kept = connections._kept[0][0].driver_connection
    for _ in range(200):  # the event loop sees the socket close (a server restart, an idle timeout)
        if kept.is_closed():
            break
        await asyncio.sleep(0.01)
    assert kept.is_closed()
    second = await connections.run(backend, idempotent=False)  # not idempotent: it must not have been sent
    assert second != first
    await connections.close()


async def test_a_statements_own_error_keeps_the_connection(engine: AsyncEngine) -> None:
    connections = RawConnections(engine)
    first = await connections.run(backend, idempotent=True)

    async def failing(connection: asyncpg.Connection) -> Any:
        return await connection.fetchval("SELECT 1 / 0")

    with pytest.raises(asyncpg.DivisionByZeroError):
        await connections.run(failing, idempotent=True)
    assert await connections.run(backend, idempotent=True) == first
    await connections.close()
