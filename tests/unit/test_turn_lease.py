"""A turn's lease: entered once, released once, and released even by a cancelled task."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel

from gateway.lease import TurnLease


class Hold:
    def __init__(self) -> None:
        self.entered = 0
        self.exited = 0

    @contextlib.asynccontextmanager
    async def context(self) -> AsyncIterator[str]:
        self.entered += 1
        try:
            yield "held"
        finally:
            await anyio.lowlevel.checkpoint()  # a cancelled, unshielded caller stops here
            self.exited += 1


async def test_release_exits_the_context_once() -> None:
    hold = Hold()
    lease = await TurnLease.acquire(hold.context())
    assert (lease.held, hold.entered, hold.exited) == ("held", 1, 0)
    await lease.release()
    await lease.release()
    assert hold.exited == 1 and lease.released


async def test_a_lease_handed_over_is_left_to_its_new_owner() -> None:
    hold = Hold()
    lease = await TurnLease.acquire(hold.context())
    assert lease.hand_over() is lease
    await lease.release_unless_handed_over()
    assert hold.exited == 0
    await lease.release()
    assert hold.exited == 1


async def test_a_cancelled_task_still_releases() -> None:
    hold = Hold()
    lease = await TurnLease.acquire(hold.context())
    with anyio.CancelScope() as scope:
        scope.cancel()
        await lease.release()
    assert hold.exited == 1


class InstantHold:
    """A hold whose exit never suspends (an in-process lock), like `Database.open_turn` on SQLite."""

    def __init__(self) -> None:
        self.exited = 0

    @contextlib.asynccontextmanager
    async def context(self) -> AsyncIterator[str]:
        try:
            yield "held"
        finally:
            self.exited += 1


async def test_an_exit_that_never_waits_is_released_by_a_cancelled_task_without_a_shield() -> None:
    hold = InstantHold()
    lease = await TurnLease.acquire(hold.context(), exit_waits=False)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await lease.release()
    assert hold.exited == 1 and lease.released
