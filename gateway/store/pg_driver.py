"""asyncpg itself: the pooled connections the Postgres statements run on, and the errors asyncpg raises.

Imported only for a Postgres database (`gateway.store.database` does it when the engine is Postgres), so
that a server on SQLite never loads asyncpg. The statements themselves are in `gateway.store.postgres`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
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


class RawConnections:
    """Runs a statement on the asyncpg connection of a pooled SQLAlchemy connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._pool = engine.sync_engine.pool

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, idempotent: bool) -> T:
        """Run `work` on a pooled connection; on a dead one, once more on a fresh one if that is safe.

        Safe means `work` is idempotent, or the connection was found closed before anything was sent.
        """
        return cast(T, await greenlet_spawn(self._run, work, idempotent))

    def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]], idempotent: bool) -> T:
        for attempt in (1, 2):
            fairy = self._pool.connect()
            connection = cast(asyncpg.Connection, fairy.driver_connection)
            try:
                result = await_only(work(connection))
            except CONNECTION_LOST as exc:
                unsent = isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)
                _discard(fairy, exc)
                if attempt == 2 or not (idempotent or unsent):
                    raise
                continue
            except asyncpg.PostgresError:
                if connection.is_closed():
                    _discard(fairy, None)
                else:
                    fairy.close()  # the statement's own error: its implicit transaction was rolled back
                raise
            except BaseException as exc:  # cancelled mid-statement: the connection's state is unknown
                _discard(fairy, exc)
                raise
            fairy.close()
            return result
        raise AssertionError("unreachable")


def _discard(fairy: Any, exc: BaseException | None) -> None:
    """Invalidate a pooled connection (the pool opens a new one when needed)."""
    try:
        fairy.invalidate(exc if isinstance(exc, Exception) else None)
    except Exception:  # closing a dead connection may fail in its own ways; it is dropped either way
        fairy.close()
