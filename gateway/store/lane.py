"""The SQLite lane: one connection on one thread that runs whole units of work, and commits them in groups.

Through aiosqlite, every DBAPI call (cursor, execute, fetch, close, commit) is one trip to a worker
thread and back, plus SQLAlchemy's async adaptation around each; a turn made some 25 of them and
spent over a millisecond of CPU on its two transactions. Here a unit of work is a plain function of a
synchronous SQLAlchemy `Connection`: it crosses to the thread once, runs its statements and commits
there, and crosses back once. The event loop never waits on SQLite (busy waits and checkpoints stay
on the thread), as with aiosqlite.

Group commit: units that queue up while the thread is busy run as one batch, in one transaction
(`BEGIN IMMEDIATE`), each inside its own savepoint, and the batch commits once. A commit writes every page
the transaction changed to the WAL, so turns that touch the same pages (the request log's indexes, the
conversations table) write them once per batch instead of once each, and the batch's callers are woken
with one call. Each unit still commits or rolls back as a whole: one that raises is rolled back to its
savepoint and gets its error, the others are unaffected; if the commit itself fails, every unit of the
batch gets that error (nothing of the batch is stored, and none of it was acknowledged). A unit that waits
alone runs in a transaction of its own, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

T = TypeVar("T")


MAX_BATCH = 64  # units committed together at most: a bound on what one failed commit takes with it


@dataclass
class _Job(Generic[T]):
    """A unit of work queued for the lane, and where its caller waits for the outcome."""

    unit: Callable[[Connection], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    result: Any = None
    error: BaseException | None = None


def _resolve(jobs: list[_Job[Any]]) -> None:
    """On the event loop: hand each job's outcome to its caller (unless it stopped waiting)."""
    for job in jobs:
        if job.future.cancelled():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)


def _end_transaction(connection: Connection) -> None:
    """After a failed unit or batch: leave no transaction open on the connection.

    A COMMIT that SQLite refuses (a deferred foreign key, a full disk) leaves its transaction open, and the
    next unit would run inside it. Roll it back; a connection that cannot even do that is closed, and the
    next unit opens a new one.
    """
    try:
        raw = connection.connection.dbapi_connection
        if raw is not None and raw.in_transaction:
            raw.rollback()
    except Exception:  # the connection is unusable: start again on a new one
        connection.invalidate()
        connection.close()


class SqliteLane:
    """Runs units of work in order on a dedicated SQLite connection and thread, committing them in groups."""

    def __init__(self, url: URL, on_connect: Callable[..., None]) -> None:
        # The lane keeps one connection for its whole life, on its one thread: no pool to manage.
        self._engine: Engine = create_engine(url.set(drivername="sqlite+pysqlite"), poolclass=NullPool)
        event.listen(self._engine, "connect", on_connect)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite")
        self._local = threading.local()
        self._queue: deque[_Job[Any]] = deque()
        self._guard = threading.Lock()
        self._draining = False  # a drain is starting, submitted or running: new jobs join its queue
        self._starting: asyncio.AbstractEventLoop | None = None  # the loop whose pass ends with the start

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = self._engine.connect()
            self._local.connection = connection
        return connection

    async def run(self, unit: Callable[[Connection], T]) -> T:
        """Run `unit` in a transaction on the lane's thread (committed on return, rolled back on error).

        The outcome is known once the transaction has committed: a unit that returns is durable. A caller
        cancelled before its unit started leaves it unrun.
        """
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(unit, loop.create_future(), loop)
        with self._guard:
            self._queue.append(job)
            # A start left pending on a loop that closed before running it would leave the queue unrun.
            start = not self._draining or (self._starting is not None and self._starting.is_closed())
            if start:
                self._draining = True
                self._starting = loop
        if start:
            # The thread is handed the queue at the end of this pass of the event loop, so the units that the
            # other tasks woken in the same pass queue (other conversations' turns) join the same batch: one
            # hand-off to the thread and one commit for all of them. Handed over at once, the thread took the
            # GIL at the event loop's next release: three batches in four were one unit, each alone.
            loop.call_soon(self._start_drain)
        return await job.future

    def _start_drain(self) -> None:
        """On the event loop, once its current pass is over: hand the queue to the lane's thread."""
        with self._guard:
            self._starting = None
        try:
            self._executor.submit(self._drain)
        except RuntimeError as exc:  # the lane was closed meanwhile: its queue will never run
            with self._guard:
                jobs = list(self._queue)
                self._queue.clear()
                self._draining = False
            for job in jobs:
                job.error = exc
                with contextlib.suppress(RuntimeError):  # that job's loop has closed: nobody waits
                    job.loop.call_soon_threadsafe(_resolve, [job])

    def _drain(self) -> None:
        """On the lane's thread: run queued jobs, a batch at a time, until the queue is empty."""
        while True:
            with self._guard:
                if not self._queue:
                    self._draining = False
                    return
                count = min(len(self._queue), MAX_BATCH)
                batch = [self._queue.popleft() for _ in range(count)]
            batch = [job for job in batch if not job.future.cancelled()]
            if not batch:
                continue
            try:
                self._run_batch(batch)
            except BaseException as exc:  # no connection (the file cannot be opened): each caller gets why
                for job in batch:
                    job.error = job.error or exc
            for loop in {job.loop for job in batch}:  # one wake-up per event loop (there is one in a server)
                with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting any more
                    loop.call_soon_threadsafe(_resolve, [job for job in batch if job.loop is loop])

    def _run_batch(self, batch: list[_Job[Any]]) -> None:
        connection = self._connection()
        if len(batch) == 1:
            job = batch[0]
            try:
                with connection.begin():
                    job.result = job.unit(connection)
            except BaseException as exc:  # handed to the caller, as a direct call would raise it
                job.error = exc
                _end_transaction(connection)
            return
        try:
            with connection.begin():
                # The batch's own statements go straight to sqlite3: through SQLAlchemy each cost an
                # execution context and a result object, some 40 calls (a third of the lane's work per turn).
                raw = connection.connection.dbapi_connection
                assert raw is not None
                # IMMEDIATE: the write lock up front, so a batch that reads and then writes cannot meet
                # another process's commit in between (SQLITE_BUSY_SNAPSHOT, which no busy wait cures).
                raw.execute("BEGIN IMMEDIATE")
                for job in batch:
                    raw.execute("SAVEPOINT unit")
                    try:
                        job.result = job.unit(connection)
                    except BaseException as exc:
                        job.error = exc
                        raw.execute("ROLLBACK TO unit")
                    raw.execute("RELEASE unit")
        except BaseException as exc:  # the batch did not commit: none of it is stored
            for job in batch:
                if job.error is None:  # a unit that raised keeps its own error
                    job.error = exc
            _end_transaction(connection)

    def _close(self) -> None:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._engine.dispose()

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the thread."""
        await asyncio.wrap_future(self._executor.submit(self._close))
        self._executor.shutdown(wait=True)
