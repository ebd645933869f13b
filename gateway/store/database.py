"""Engine, sessions and the per-conversation lock; dialect differences live here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Connection, Float, Integer, cast, delete, event, func, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from gateway.errors import ConversationBusy, DatabaseUnavailable
from gateway.store.lane import SqliteLane
from gateway.store.tables import Lease

log = logging.getLogger("gateway.database")

# What only the database layer raises: SQLAlchemy's wrapped driver errors, the pool's checkout timeout, and
# what asyncpg raises unwrapped while connecting ("the database system is starting up", a connection closed
# under a statement). The app renders these as 503 wherever they escape.
DATABASE_ERRORS = (DBAPIError, DisconnectionError, PoolTimeout, asyncpg.PostgresError, asyncpg.InterfaceError)
# ... plus the socket errors of a refused or dropped connection, caught around database calls.
DB_ERRORS = (*DATABASE_ERRORS, OSError)
MAX_POLL_SECONDS = 0.05

T = TypeVar("T")


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """Create the async engine: SQLite in WAL mode with a busy timeout, or a pooled Postgres."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800
    )


@dataclass
class _Waiters:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _db_now() -> Any:
    """The database server's clock in epoch seconds: one clock for every replica, whatever their skew."""
    return cast(func.extract("epoch", func.clock_timestamp()), Float)


class ConversationLocks:
    """Serializes turns of one conversation: in process always, across processes on Postgres.

    In a process, waiters queue on an asyncio lock (FIFO), so only the head of the queue asks the database.
    Across processes the lock is a lease row (holder, expires_at) taken with an atomic upsert that only
    succeeds when no row exists or the row has expired, polled with a capped backoff until the deadline.
    Expiry uses the database's clock, never the replicas'. No connection is held while the upstream call
    runs (each lease statement is its own short transaction), so the pool cannot deadlock however many
    conversations wait. The holder renews the lease every third of its length while the turn runs (a
    stream may last longer than any fixed lease); a crashed process stops renewing and its lease expires.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, shared: bool, lease_seconds: float):
        self._sessions = sessions
        self._shared = shared
        self._lease_seconds = lease_seconds
        self._local: dict[tuple[str, str], _Waiters] = {}

    @contextlib.asynccontextmanager
    async def hold(self, owner: str, conversation_id: str, wait: float) -> AsyncIterator[float]:
        """Hold the conversation for one turn; yields the seconds spent waiting. Busy past `wait` s."""
        key = (owner, conversation_id)
        waiters = self._local.setdefault(key, _Waiters())
        waiters.users += 1
        started = time.monotonic()
        try:
            try:
                await asyncio.wait_for(waiters.lock.acquire(), wait)
            except TimeoutError:
                raise ConversationBusy(_busy_message(wait)) from None
            try:
                if not self._shared:
                    yield time.monotonic() - started
                    return
                holder = await self._acquire_lease(owner, conversation_id, started + wait, wait)
                renewal = asyncio.create_task(self._renew(owner, conversation_id, holder))
                try:
                    yield time.monotonic() - started
                finally:
                    renewal.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewal
                    await self._release_lease(owner, conversation_id, holder)
            finally:
                waiters.lock.release()
        finally:
            waiters.users -= 1
            if waiters.users == 0:
                self._local.pop(key, None)

    async def _acquire_lease(self, owner: str, conversation_id: str, deadline: float, wait: float) -> str:
        holder = secrets.token_hex(16)
        delay = 0.005
        while True:
            try:
                if await self._try_lease(owner, conversation_id, holder):
                    return holder
            except DB_ERRORS as exc:
                raise DatabaseUnavailable(f"The database is unavailable: {type(exc).__name__}") from exc
            if time.monotonic() + delay > deadline:
                raise ConversationBusy(_busy_message(wait))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, MAX_POLL_SECONDS)

    async def _try_lease(self, owner: str, conversation_id: str, holder: str) -> bool:
        insert = pg_insert(Lease).values(
            owner=owner,
            conversation_id=conversation_id,
            holder=holder,
            expires_at=_db_now() + self._lease_seconds,
        )
        statement = insert.on_conflict_do_update(
            index_elements=[Lease.owner, Lease.conversation_id],
            set_={"holder": insert.excluded.holder, "expires_at": insert.excluded.expires_at},
            where=Lease.expires_at < _db_now(),
        ).returning(Lease.holder)
        async with self._lease_transaction() as session:
            row = (await session.execute(statement)).first()
        return row is not None and row[0] == holder

    @contextlib.asynccontextmanager
    async def _lease_transaction(self) -> AsyncIterator[AsyncSession]:
        """A transaction for lease rows that does not wait for the WAL flush.

        A lease is coordination, not data: losing its last write in a database crash only frees (or keeps
        for at most one lease period) a lock, and turn writes are fenced on the message count anyway. This
        saves a durable commit (milliseconds on an ordinary disk) twice per turn.
        """
        async with self._sessions() as session, session.begin():
            await session.execute(text("SET LOCAL synchronous_commit = off"))
            yield session

    async def _renew(self, owner: str, conversation_id: str, holder: str) -> None:
        """Push the lease's expiry forward until cancelled; stop if another holder took it over."""
        statement = (
            update(Lease)
            .where(Lease.owner == owner, Lease.conversation_id == conversation_id, Lease.holder == holder)
            .values(expires_at=_db_now() + self._lease_seconds)
        )
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                async with self._sessions() as session, session.begin():
                    result = await session.execute(statement)
            except DB_ERRORS as exc:
                log.warning("could not renew a conversation lease: %s", type(exc).__name__)
                continue
            if result.rowcount == 0:  # type: ignore[attr-defined]
                log.warning("a conversation lease expired before its turn ended; another turn may take it")
                return

    async def _release_lease(self, owner: str, conversation_id: str, holder: str) -> None:
        statement = delete(Lease).where(
            Lease.owner == owner, Lease.conversation_id == conversation_id, Lease.holder == holder
        )
        try:
            async with self._lease_transaction() as session:
                await session.execute(statement)
        except DB_ERRORS as exc:  # the lease then simply expires
            log.warning("could not release a conversation lease: %s", type(exc).__name__)


def _busy_message(timeout: float) -> str:
    return (
        f"Another request of this conversation is still in progress after {timeout:g}s; "
        "retry when it has finished."
    )


class Database:
    """The engine, its session factory and the conversation locks, owned by the app's lifespan."""

    def __init__(self, engine: AsyncEngine, *, lease_seconds: float) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.locks = ConversationLocks(
            self.sessions, shared=self.dialect == "postgresql", lease_seconds=lease_seconds
        )
        database = engine.url.database
        self._lane_wanted = self.dialect == "sqlite" and bool(database) and database != ":memory:"
        self._lane: SqliteLane | None = None

    async def run(self, unit: Callable[[Connection], T]) -> T:
        """Run a unit of work (synchronous Core statements on a Connection) in one transaction.

        The per-turn hot path uses this: on an SQLite file the unit crosses once to the SQLite lane's
        thread (see store/lane.py); elsewhere it runs on a pooled async connection via run_sync.
        Database outages become DatabaseUnavailable (503), as in `transaction()`.
        """
        try:
            if self._lane_wanted:
                if self._lane is None:
                    self._lane = SqliteLane(self.engine.url, _sqlite_pragmas)
                return await self._lane.run(unit)
            async with self.engine.begin() as connection:
                return await connection.run_sync(unit)
        except (*DB_ERRORS, sqlite3.Error) as exc:  # the lane runs some statements on sqlite3 itself
            raise DatabaseUnavailable(f"The database is unavailable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        """Stop the SQLite lane, if one was started (the lifespan disposes of the engine itself)."""
        lane, self._lane = self._lane, None
        self._lane_wanted = False  # a late unit (shutdown) takes the engine's path, never a new thread
        if lane is not None:
            await lane.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One session, one transaction; database outages become DatabaseUnavailable (503)."""
        try:
            async with self.sessions() as session, session.begin():
                yield session
        except DB_ERRORS as exc:
            raise DatabaseUnavailable(f"The database is unavailable: {type(exc).__name__}") from exc

    async def ping(self) -> bool:
        """Return True when the database answers a trivial query."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except DB_ERRORS:
            return False
        return True

    def insert(self, table: Any) -> Any:
        """An INSERT that supports ON CONFLICT for this dialect."""
        return pg_insert(table) if self.dialect == "postgresql" else sqlite_insert(table)


class utc_day(FunctionElement[int]):  # lowercase like the SQL functions it stands for
    """SQL: the UTC day number (days since 1970-01-01) of a Unix-seconds column."""

    type = Integer()
    inherit_cache = True


@compiles(utc_day)
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # CAST truncates toward zero, which is the floor for the positive timestamps the log holds.
    return f"CAST({compiler.process(element.clauses, **kw)} / 86400 AS INTEGER)"


@compiles(utc_day, "postgresql")
def _utc_day_postgres(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # CAST rounds in Postgres, so floor first.
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)} / 86400) AS INTEGER)"
