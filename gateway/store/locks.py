"""One turn at a time per conversation: an in-process queue, and on Postgres a lease row shared by replicas.

In a process, waiters queue on an asyncio lock (FIFO), so only the head of the queue asks the database.
Across processes the lock is a lease row (holder, expires_at) taken with an atomic upsert that only
succeeds when no row exists or the row has expired, polled with a capped backoff until the deadline.
Expiry uses the database's clock, never the replicas'. No connection is held while the upstream call
runs (each lease statement is its own short transaction), so the pool cannot deadlock however many
conversations wait. The holder renews the lease every third of its length while the turn runs (a
stream may last longer than any fixed lease); a crashed process stops renewing and its lease expires.
Lease writes do not wait for the WAL flush: a lease is coordination, not data, and turn writes are
fenced on the conversation's message count anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection, delete

from gateway.errors import ConversationBusy, DatabaseUnavailable
from gateway.store.postgres import LEASE, RELEASE, RENEW
from gateway.store.tables import LEASES

if TYPE_CHECKING:
    from gateway.store.pg_driver import RawConnections

log = logging.getLogger("gateway.database")

MAX_POLL_SECONDS = 0.05
T = TypeVar("T")


@dataclass
class _Waiters:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def busy_message(timeout: float) -> str:
    """The 409 message of a conversation that stayed busy for `timeout` seconds."""
    return (
        f"Another request of this conversation is still in progress after {timeout:g}s; "
        "retry when it has finished."
    )


def new_holder() -> str:
    """A random lease holder id, one per turn."""
    return secrets.token_hex(16)


async def poll(attempt: Callable[[], Awaitable[T | None]], deadline: float, wait: float) -> T:
    """Call `attempt` until it returns something, with a jittered backoff; 409 busy past `deadline`."""
    delay = 0.005
    while True:
        result = await attempt()
        if result is not None:
            return result
        if time.monotonic() + delay > deadline:
            raise ConversationBusy(busy_message(wait))
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, MAX_POLL_SECONDS)


def release_lease(connection: Connection, owner: str, conversation_id: str, holder: str) -> None:
    """Delete the lease row of this holder within a unit of work (its turn's transaction)."""
    connection.execute(
        delete(LEASES).where(
            LEASES.c.owner == owner, LEASES.c.conversation_id == conversation_id, LEASES.c.holder == holder
        )
    )


class Leases:
    """The Postgres lease statements, run on raw pooled connections; database errors become 503."""

    def __init__(self, connections: RawConnections, seconds: float, errors: tuple[type[BaseException], ...]):
        self.connections = connections
        self.seconds = seconds
        self.errors = errors

    async def fetchrow(self, statement: str, *arguments: object, idempotent: bool) -> object:
        """One statement's first row; database errors become DatabaseUnavailable."""
        try:
            return await self.connections.run(
                lambda c: c.fetchrow(statement, *arguments), idempotent=idempotent
            )
        except self.errors as exc:
            raise DatabaseUnavailable(f"The database is unavailable: {type(exc).__name__}") from exc

    async def take(self, owner: str, conversation_id: str, holder: str) -> bool | None:
        """Take the lease if it is free (True), else None."""
        row = await self.fetchrow(LEASE, owner, conversation_id, holder, self.seconds, idempotent=True)
        return True if row["taken"] == holder else None  # type: ignore[index]

    async def release(self, owner: str, conversation_id: str, holder: str) -> None:
        """Delete the lease row if this holder still has it (on failure the lease simply expires)."""
        try:
            await self.fetchrow(RELEASE, owner, conversation_id, holder, idempotent=True)
        except DatabaseUnavailable as exc:
            log.warning("could not release a conversation lease: %s", exc)

    async def renew(self, owner: str, conversation_id: str, holder: str) -> bool:
        """Push the lease's expiry forward; False when another holder has taken it over."""
        row = await self.fetchrow(RENEW, owner, conversation_id, holder, self.seconds, idempotent=True)
        return bool(row["renewed"])  # type: ignore[index]

    def keep(self, owner: str, conversation_id: str, holder: str) -> KeptLease:
        """Renew the held lease every third of its length until `KeptLease.close`, which releases it."""
        return KeptLease(self, owner, conversation_id, holder)


class KeptLease:
    """A held lease: renewed in the background while its turn runs, released at the end."""

    def __init__(self, leases: Leases, owner: str, conversation_id: str, holder: str) -> None:
        self.leases = leases
        self.owner = owner
        self.conversation_id = conversation_id
        self.holder = holder
        self.released = False  # set when the turn's own write released it
        self._task: asyncio.Task[None] | None = None
        # A timer, not a task per turn: most turns end before the first renewal is due.
        self._timer = asyncio.get_running_loop().call_later(leases.seconds / 3, self._start_renewal)

    def _start_renewal(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            try:
                if not await self.leases.renew(self.owner, self.conversation_id, self.holder):
                    log.warning(
                        "a conversation lease expired before its turn ended; another turn may take it"
                    )
                    return
            except DatabaseUnavailable as exc:
                log.warning("could not renew a conversation lease: %s", exc)
            await asyncio.sleep(self.leases.seconds / 3)

    async def close(self) -> None:
        """Stop renewing; release the lease unless the turn's write did."""
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.released:
            await self.leases.release(self.owner, self.conversation_id, self.holder)


class ConversationLocks:
    """Serializes the turns of one conversation: in process always, across processes with `leases`."""

    def __init__(self, leases: Leases | None) -> None:
        self.leases = leases
        self._local: dict[tuple[str, str], _Waiters] = {}

    def queue(self, owner: str, conversation_id: str, wait: float) -> QueuedTurn:
        """Wait for this process's earlier turns of the conversation (an async context manager); entering
        it gives the seconds spent waiting. Busy (409) past `wait` seconds."""
        return QueuedTurn(self._local, (owner, conversation_id), wait)

    @contextlib.asynccontextmanager
    async def hold(self, owner: str, conversation_id: str, wait: float) -> AsyncIterator[float]:
        """Hold the conversation (queue, then lease); yields the seconds spent waiting. Busy past `wait` s."""
        started = time.monotonic()
        async with self.queue(owner, conversation_id, wait):
            if self.leases is None:
                yield time.monotonic() - started
                return
            leases, holder = self.leases, new_holder()
            await poll(lambda: leases.take(owner, conversation_id, holder), started + wait, wait)
            kept = leases.keep(owner, conversation_id, holder)
            try:
                yield time.monotonic() - started
            finally:
                await kept.close()


class QueuedTurn:
    """One turn's place in its conversation's in-process queue (`ConversationLocks.queue`).

    A class rather than a generator-based context manager: entered and left by every turn, it costs a
    fraction of one (an async generator, its frame and its `asend`/`athrow` round trips).
    """

    __slots__ = ("_key", "_local", "_wait", "_waiters")

    def __init__(self, local: dict[tuple[str, str], _Waiters], key: tuple[str, str], wait: float) -> None:
        self._local = local
        self._key = key
        self._wait = wait

    async def __aenter__(self) -> float:
        waiters = self._local.get(self._key)
        if waiters is None:
            waiters = self._local[self._key] = _Waiters()
        self._waiters = waiters
        waiters.users += 1
        started = time.monotonic()
        try:
            if waiters.users == 1:  # no other turn of it here, holding or queued: the lock is taken at once
                await waiters.lock.acquire()  # (wait_for would run the acquire in a task of its own)
            else:
                try:
                    await asyncio.wait_for(waiters.lock.acquire(), self._wait)
                except TimeoutError:
                    raise ConversationBusy(busy_message(self._wait)) from None
        except BaseException:
            self._leave()
            raise
        return time.monotonic() - started

    async def __aexit__(self, *_exc: object) -> None:
        self._waiters.lock.release()
        self._leave()

    def _leave(self) -> None:
        waiters = self._waiters
        waiters.users -= 1
        if waiters.users == 0:
            self._local.pop(self._key, None)
