"""asyncpg itself: the pooled connections the Postgres statements run on, and the errors asyncpg raises.

Imported only for a Postgres database (`gateway.store.database` does it when the engine is Postgres), so
that a server on SQLite never loads asyncpg. The statements themselves are in `gateway.store.postgres`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import await_only, greenlet_spawn

T = TypeVar("T")

# What asyncpg raises unwrapped while connecting ("the database system is starting up", a connection closed
# under a statement); SQLAlchemy wraps what it raises during statements.
POSTGRES_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

# A pooled connection that died (server restart or shutdown, network), as asyncpg reports it: the server's
# "terminating connection" errors can arrive before asyncpg has seen the socket close.
CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
)


# Pooled connections the hot path keeps checked out between its statements (at most half the pool), and how
# many statements one runs before it goes back through the pool's checkout checks (recycling, the server's
# closing it).
KEPT = 16
KEPT_STATEMENTS = 200


class RawConnections:
    """Runs a statement on the asyncpg connection of a pooled SQLAlchemy connection.

    A checkout and checkin through SQLAlchemy's pool, in the greenlet its async engine needs, cost some
    45 us of CPU a statement (most of what the statement's own work on asyncpg costs): so connections (up to
    half the pool, at most `KEPT`) stay checked out between statements, each for at most `KEPT_STATEMENTS`,
    and a statement takes one of those when there is one. A pool of fewer than 4 (GATEWAY_DB_POOL_SIZE=1)
    keeps none. A kept connection that the server has closed is dropped before use.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._pool = engine.sync_engine.pool
        # A queue pool's size; others (none the gateway makes for Postgres) keep nothing.
        self._size = self._pool.size() if isinstance(self._pool, QueuePool) else 0
        self._keep = min(KEPT, self._size // 2) if self._size >= 4 else 0
        self._kept: list[tuple[Any, int]] = []  # (checked-out pooled connection, statements it has run)

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, idempotent: bool) -> T:
        """Run `work` on a pooled connection; on a dead one, once more on a fresh one if that is safe.

        Safe means `work` is idempotent, or the connection was found closed before anything was sent.
        """
        while self._kept:
            fairy, used = self._kept.pop()
            connection = cast(asyncpg.Connection, fairy.driver_connection)
            if connection.is_closed():
                await greenlet_spawn(_discard, fairy, None)
                continue
            try:
                result = await work(connection)
            except BaseException as exc:
                drop, retry = _after_error(connection, exc, idempotent)
                if drop:
                    await greenlet_spawn(_discard, fairy, exc)
                else:
                    await self._done(fairy, used + 1)
                if not retry:
                    raise
                return cast(T, await greenlet_spawn(self._run, work, idempotent, (2,)))
            await self._done(fairy, used + 1)
            return result
        return cast(T, await greenlet_spawn(self._run, work, idempotent, (1, 2)))

    def _run(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], idempotent: bool, attempts: tuple[int, ...]
    ) -> T:
        for attempt in attempts:
            fairy = self._pool.connect()
            connection = cast(asyncpg.Connection, fairy.driver_connection)
            try:
                result = await_only(work(connection))
            except BaseException as exc:
                drop, retry = _after_error(connection, exc, idempotent)
                if drop:
                    _discard(fairy, exc)
                else:
                    self._keep_or_close(fairy, 1)
                if attempt == 2 or not retry:
                    raise
                continue
            self._keep_or_close(fairy, 1)
            return result
        raise AssertionError("unreachable")

    async def _done(self, fairy: Any, used: int) -> None:
        if not self._keeps(fairy, used):
            await greenlet_spawn(_checkin, fairy)

    def _keep_or_close(self, fairy: Any, used: int) -> None:
        if not self._keeps(fairy, used):
            _checkin(fairy)

    def _keeps(self, fairy: Any, used: int) -> bool:
        """Keep `fairy` checked out for the next statement, if there is room and it has runs left.

        Never more than half the pool, and only while at most three quarters of it is checked out: the
        gateway's other statements (SQLAlchemy's) take theirs from the pool and must find one there.
        """
        connection = cast(asyncpg.Connection, fairy.driver_connection)
        if (
            len(self._kept) >= self._keep
            or used >= KEPT_STATEMENTS
            or self._pool.checkedout() > self._size * 3 // 4  # type: ignore[attr-defined]
            or connection.is_closed()
        ):
            return False
        self._kept.append((fairy, used))
        return True

    async def close(self) -> None:
        """Check the kept connections back in (before the engine is disposed of)."""
        kept, self._kept = self._kept, []
        for fairy, _ in kept:
            await greenlet_spawn(_checkin, fairy)


def _after_error(connection: asyncpg.Connection, exc: BaseException, idempotent: bool) -> tuple[bool, bool]:
    """(drop the connection, run the statement again on a fresh one) after `exc` interrupted a statement.

    A lost connection is dropped, and the statement retried if that is safe: it is idempotent, or was never
    sent. The statement's own error (its implicit transaction rolled back) leaves a live connection usable.
    Anything else (a cancellation mid-statement) leaves the connection's state unknown: it is dropped.
    """
    if isinstance(exc, CONNECTION_LOST):
        return True, idempotent or _unsent(exc)
    if isinstance(exc, asyncpg.PostgresError):
        return connection.is_closed(), False
    return True, False


def _unsent(exc: BaseException) -> bool:
    """True when asyncpg found the connection closed before it sent anything."""
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def _checkin(fairy: Any) -> None:
    """Give a pooled connection back to the pool."""
    fairy.close()


def _discard(fairy: Any, exc: BaseException | None) -> None:
    """Invalidate a pooled connection (the pool opens a new one when needed)."""
    try:
        fairy.invalidate(exc if isinstance(exc, Exception) else None)
    except Exception:  # closing a dead connection may fail in its own ways; it is dropped either way
        fairy.close()
