"""The SQLite lane: one connection on one thread that runs a whole unit of work per hand-off.

Through aiosqlite, every DBAPI call (cursor, execute, fetch, close, commit) is one trip to a worker
thread and back, plus SQLAlchemy's async adaptation around each; a turn made some 25 of them and
spent over a millisecond of CPU on its two transactions. Here a unit of work is a plain function of a
synchronous SQLAlchemy `Connection`: it crosses to the thread once, runs its statements and commits
there, and crosses back once. The event loop never waits on SQLite (busy waits and checkpoints stay
on the thread), as with aiosqlite.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

T = TypeVar("T")


class SqliteLane:
    """Runs units of work, one at a time and in order, on a dedicated SQLite connection and thread."""

    def __init__(self, url: URL, on_connect: Callable[..., None]) -> None:
        # The lane keeps one connection for its whole life, on its one thread: no pool to manage.
        self._engine: Engine = create_engine(url.set(drivername="sqlite+pysqlite"), poolclass=NullPool)
        event.listen(self._engine, "connect", on_connect)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite")
        self._local = threading.local()

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = self._engine.connect()
            self._local.connection = connection
        return connection

    def _run(self, unit: Callable[[Connection], T]) -> T:
        connection = self._connection()
        with connection.begin():
            return unit(connection)

    async def run(self, unit: Callable[[Connection], T]) -> T:
        """Run `unit` in one transaction on the lane's thread (commit on return, rollback on error)."""
        return await asyncio.wrap_future(self._executor.submit(self._run, unit))

    def _close(self) -> None:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._engine.dispose()

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the thread."""
        await asyncio.wrap_future(self._executor.submit(self._close))
        self._executor.shutdown(wait=True)
