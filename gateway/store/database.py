"""Engine, units of work and the per-conversation lock; dialect differences live here."""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry

from gateway.attempts import AttemptRecord
from gateway.errors import ConversationBusy, DatabaseUnavailable
from gateway.history import BudgetRule, StoredMessage
from gateway.store.conversations import (
    CHANGED,
    LoadedTurn,
    TurnWrite,
    conversation_budget,
    load_turn_state,
    loaded_turn,
    refuse_past_limit,
    turn_row,
    write_turn,
)
from gateway.store.lane import SqliteLane
from gateway.store.locks import ConversationLocks, KeptLease, Leases, new_holder, poll, release_lease
from gateway.store.postgres import TAKE, parse_take, read_is_enough, store_arguments, take_anchor
from gateway.store.tables import Conversation
from gateway.store.usage import attempt_row, insert_attempt
from gateway.store.window_cache import CachedWindow, WindowCache

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("gateway.database")

# What only the database layer raises: SQLAlchemy's wrapped driver errors and the pool's checkout timeout;
# on Postgres also what asyncpg raises unwrapped (`database_errors`). The app renders these as 503 wherever
# they escape.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, DisconnectionError, PoolTimeout)


def database_errors(url: str) -> tuple[type[BaseException], ...]:
    """DATABASE_ERRORS for the database at `url`, with asyncpg's own errors when it is Postgres.

    asyncpg is imported only here and by the Postgres engine, so a process on SQLite never loads it (~2 MB).
    """
    return _errors(postgres=not url.startswith("sqlite"))


def _errors(*, postgres: bool) -> tuple[type[BaseException], ...]:
    if not postgres:
        return DATABASE_ERRORS
    from gateway.store.pg_driver import POSTGRES_ERRORS

    return (*DATABASE_ERRORS, *POSTGRES_ERRORS)


def db_errors(url: str) -> tuple[type[BaseException], ...]:
    """`database_errors(url)` plus the socket errors of a refused or dropped connection, caught around
    database calls."""
    return (*database_errors(url), OSError)


T = TypeVar("T")


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Temporary files in memory. The lane's batches give each unit a savepoint, and SQLite keeps the pages a
    # savepoint may have to restore in a statement journal: a temporary file past 64 KB, written with two
    # system calls per page (some 12 of a turn's 30 write calls). Report queries' sorts are held in memory too
    # while they run (a latency percentile over a million request-log rows: a few MB).
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _closed_connection(_dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """At checkout, replace a pooled connection the server has closed (a restart, an idle timeout).

    asyncpg learns of a closed socket from the event loop, without a round trip, so this costs nothing;
    a liveness ping (pool_pre_ping) would cost a round trip per checkout. A connection that dies
    unnoticed fails on use instead: the hot path retries once where that is safe (store/postgres.py).
    """
    connection = record.driver_connection
    if connection is not None and connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def create_engine(url: str, *, pool_size: int = 10, transaction_pooling: bool = False) -> AsyncEngine:
    """Create the async engine: SQLite in WAL mode with a busy timeout, or a pooled Postgres.

    `transaction_pooling` (GATEWAY_DB_TRANSACTION_POOLING, for PgBouncer in transaction mode): no
    prepared statements kept on a server connection (asyncpg's and SQLAlchemy's statement caches off),
    and no session state across transactions.

    SQLAlchemy's asyncio extension (which imports its ORM, ~7 MB) is imported here, on first use: a
    serving process on an SQLite file never needs it (`open_database`).
    """
    from sqlalchemy.ext.asyncio import create_async_engine

    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if transaction_pooling:
        connect_args = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    # Up to 2 x pool_size connections, opened as needed and then kept: overflow connections would be
    # closed on return whenever pool_size are idle, and under load that meant a new connection (connect,
    # authenticate, prepare the statements again) every few requests.
    engine = create_async_engine(
        url, pool_size=2 * pool_size, max_overflow=0, pool_recycle=1800, connect_args=connect_args
    )
    event.listen(engine.sync_engine, "checkout", _closed_connection)
    return engine


def _is_sqlite_file(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


def open_database(
    url: str, *, lease_seconds: float, pool_size: int = 10, transaction_pooling: bool = False
) -> Database:
    """Open the database at `url` for a process's lifetime; `Database.close()` closes all of it.

    An SQLite file is served by the SQLite lane alone (store/lane.py): no async engine, so neither
    aiosqlite nor SQLAlchemy's asyncio extension and ORM is loaded. Postgres (and an in-memory SQLite
    database) get the pooled async engine of `create_engine`.
    """
    if _is_sqlite_file(make_url(url)):
        return Database(None, lease_seconds=lease_seconds, url=url)
    engine = create_engine(url, pool_size=pool_size, transaction_pooling=transaction_pooling)
    return Database(engine, lease_seconds=lease_seconds, owns_engine=True)


class Database:
    """The engine, the one way to run units of work on it, and the conversation locks.

    Built on an async engine (`create_engine`), which the caller disposes of, or by `open_database`,
    whose `close()` closes everything it opened. On an SQLite file every unit of work runs on the
    SQLite lane; the async engine is then made only if something asks for `engine`.
    """

    def __init__(
        self,
        engine: AsyncEngine | None,
        *,
        lease_seconds: float,
        url: str | None = None,
        owns_engine: bool = False,
    ) -> None:
        self._engine = engine
        self._owns_engine = owns_engine or engine is None  # one made on demand is this object's to dispose
        self.url: URL = engine.url if engine is not None else make_url(str(url))
        self.dialect = self.url.get_backend_name()
        self.leases: Leases | None = None
        postgres = self.dialect == "postgresql"
        self.errors: tuple[type[BaseException], ...] = (*_errors(postgres=postgres), OSError)  # db_errors
        self._unit_errors: tuple[type[BaseException], ...] = (*self.errors, sqlite3.Error)  # the lane's own
        if postgres:
            from gateway.store.pg_driver import RawConnections

            errors = (*self.errors, self.engine.dialect.loaded_dbapi.Error)
            self.leases = Leases(RawConnections(self.engine), lease_seconds, errors)
        self.locks = ConversationLocks(self.leases)
        # SQLite's turns read their window from memory when they can (store/window_cache.py); on Postgres the
        # lease statement reads it in the same round trip as the lease.
        self.windows: WindowCache | None = None if postgres else WindowCache()
        self._lane_wanted = _is_sqlite_file(self.url)
        self._lane: SqliteLane | None = None

    @property
    def turn_exit_waits(self) -> bool:
        """Whether leaving `open_turn` may wait on the database (Postgres: its lease row). On SQLite it only
        releases the in-process lock, without suspending, so no cancellation can interrupt it."""
        return self.leases is not None

    @property
    def engine(self) -> AsyncEngine:
        """The async engine (made now, on an SQLite file opened by `open_database`)."""
        if self._engine is None:
            self._engine = create_engine(self.url.render_as_string(hide_password=False), pool_size=2)
        return self._engine

    @contextlib.asynccontextmanager
    async def open_turn(
        self,
        owner: str,
        conversation_id: str,
        *,
        wait: float,
        budget: BudgetRule,
        anchored: Callable[[Conversation], bool] = lambda _: False,
        max_conversations: int = 0,
    ) -> AsyncIterator[OpenTurn]:
        """Hold the conversation for one turn and read what the turn needs; `OpenTurn.store` ends it.

        Yields what `load_turn_state` reads: the conversation (None when new; a new one past the caller's
        `max_conversations` is refused), the stored messages its budget may send, and the stable window's
        anchor when `anchored` says the strategy needs it. On Postgres, taking the lease and the usual read
        are one statement, and storing the turn and releasing the lease another (store/postgres.py); what
        that statement cannot answer is read under the lease. Busy (409) past `wait` seconds.
        """
        started = time.monotonic()
        load = functools.partial(
            load_turn_state,
            owner=owner,
            conversation_id=conversation_id,
            budget_for=functools.partial(conversation_budget, budget),
            anchored=anchored,
            max_conversations=max_conversations,
        )
        async with self.locks.queue(owner, conversation_id, wait):
            if self.leases is None:
                key, windows = (owner, conversation_id), self.windows
                cached = windows.get(key) if windows is not None else None
                loaded = await self.run(functools.partial(load, cached=cached))
                if windows is not None and loaded.conversation is not None and not loaded.cached:
                    windows.put(
                        key, CachedWindow.of(loaded.conversation, loaded.candidates, windows.max_messages)
                    )
                yield OpenTurn(self, time.monotonic() - started, loaded, None)
                return
            leases, holder = self.leases, new_holder()
            arguments = (
                owner,
                conversation_id,
                holder,
                leases.seconds,
                *_budget_arguments(budget),
                max_conversations,
            )

            async def take() -> Any:
                row = await leases.fetchrow(TAKE, *arguments, idempotent=True)
                return row if row["taken"] == holder else None  # type: ignore[index]

            row = await poll(take, started + wait, wait)
            kept = leases.keep(owner, conversation_id, holder)
            try:
                loaded = await self._read_taken(row, holder, budget, anchored, max_conversations, load)
                yield OpenTurn(self, time.monotonic() - started, loaded, kept)
            finally:
                await kept.close()

    async def _read_taken(
        self,
        row: Any,
        holder: str,
        budget: BudgetRule,
        anchored: Callable[[Conversation], bool],
        max_conversations: int,
        load: Callable[[Connection], LoadedTurn],
    ) -> LoadedTurn:
        """The TAKE statement's read (the stable anchor's probe included), or `load` under the lease where
        that read may be stale or too short."""
        _, current, conversation, candidates = parse_take(row, holder)
        if current and conversation is None:
            refuse_past_limit(row["owned"] or 0, max_conversations)
            return LoadedTurn(None, [])
        budget_for = conversation_budget
        if (
            current
            and conversation is not None
            and read_is_enough(row, budget_for(budget, conversation), conversation)
        ):
            loaded = loaded_turn(conversation, candidates, anchored(conversation))
            # the anchor lies before the window (this turn cuts it): the statement probed for it too
            return loaded if loaded is not None else LoadedTurn(conversation, candidates, take_anchor(row))
        return await self.run(load)

    async def run(self, unit: Callable[[Connection], T]) -> T:
        """Run a unit of work (a plain function of a synchronous Connection) in one transaction.

        Every store function is such a unit, or a step of one: callers pass `functools.partial(fn, ...)`
        or a local function that chains several. On an SQLite file the unit crosses once to the SQLite
        lane's thread (see store/lane.py); elsewhere it runs on a pooled async connection via run_sync.
        It commits when the unit returns and rolls back when it raises. This is the one place database
        errors are translated: outages (and the sqlite3 errors the lane's thread may raise) become
        DatabaseUnavailable (503); the gateway's own errors raised by the unit pass through.
        """
        try:
            if self._lane_wanted:
                if self._lane is None:
                    self._lane = SqliteLane(self.url, _sqlite_pragmas)
                return await self._lane.run(unit)
            async with self.engine.begin() as connection:
                return await connection.run_sync(unit)
        except self._unit_errors as exc:  # the lane runs some statements on sqlite3 itself
            raise DatabaseUnavailable(f"The database is unavailable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        """Stop the SQLite lane, if one was started, and dispose of the engine if this object owns it."""
        lane, self._lane = self._lane, None
        self._lane_wanted = False  # a late unit (shutdown) takes the engine's path, never a new thread
        if lane is not None:
            await lane.close()
        if self.leases is not None:
            await self.leases.connections.close()  # the connections its statements keep checked out
        if self._owns_engine and self._engine is not None:
            await self._engine.dispose()

    async def ping(self) -> bool:
        """Return True when the database answers a trivial query."""
        try:
            await self.run(_select_one)
        except DatabaseUnavailable:
            return False
        return True


def _select_one(connection: Connection) -> None:
    connection.execute(text("SELECT 1"))


@dataclass
class OpenTurn:
    """A conversation held for one turn and what the turn read; `store` writes the turn."""

    db: Database
    waited: float  # seconds spent waiting for the conversation
    loaded: LoadedTurn  # the conversation (None when new), its window candidates, the stable anchor
    lease: KeptLease | None  # the Postgres lease (None on SQLite: the in-process queue is the lock)

    @property
    def conversation(self) -> Conversation | None:
        """The conversation as the turn found it (None when new)."""
        return self.loaded.conversation

    @property
    def candidates(self) -> list[StoredMessage]:
        """The stored messages the turn's budget may send (a suffix that the window trims)."""
        return self.loaded.candidates

    async def store(
        self, write: TurnWrite, attempt: AttemptRecord, *, extra: Callable[[Connection], None] | None = None
    ) -> int:
        """Store the turn and its request-log row in one transaction; returns the conversation pk.

        Fenced: 409 `conversation_busy`, and nothing stored, when the conversation is no longer in the
        state the turn was composed from. On Postgres the same statement releases the lease. `extra`
        writes more in the same transaction (on Postgres a unit of work then replaces the one statement).
        """
        conversation, lease = self.conversation, self.lease
        # What the one statement does not write (a summary, the Responses API's row) takes a unit of
        # work, which also deletes the lease row.
        general = extra is not None or write.summary is not None
        if lease is None or general:

            def unit(connection: Connection) -> int:
                pk = write_turn(connection, conversation, write)
                insert_attempt(connection, attempt)
                if extra is not None:
                    extra(connection)
                if lease is not None:
                    release_lease(connection, lease.owner, lease.conversation_id, lease.holder)
                return pk

            pk = await self.db.run(unit)
            if lease is not None:
                lease.released = True
            elif self.db.windows is not None:  # committed: the cached window goes on with the turn
                key = (write.owner, write.conversation_id)
                self.db.windows.stored(key, conversation, write.messages, pk, write.now)
            return pk
        statement, arguments = store_arguments(
            lease.owner,
            lease.conversation_id,
            lease.holder,
            conversation,
            turn_row(conversation, write),
            write.messages,
            attempt_row(attempt),
        )
        row: Any = await lease.leases.fetchrow(statement, *arguments, idempotent=False)
        lease.released = True  # the statement ran: the lease row is gone, stored or fenced off
        if row is None:
            raise ConversationBusy(CHANGED)
        return int(row["pk"])


def _budget_arguments(rule: BudgetRule) -> tuple[int | None, ...]:
    return (
        rule.header.max_messages,
        rule.header.max_tokens,
        rule.default.max_messages,
        rule.default.max_tokens,
    )
