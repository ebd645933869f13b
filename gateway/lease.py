"""The hold of one turn on its conversation, with one owner and one release.

`Database.open_turn` is a context manager, but a streamed turn outlives the call that opened it: the hold
ends with the stream, after the turn is stored (`turns.StreamEnd`, run by the stream's generator or, if
that never ran, by the response's close). A `TurnLease` is that context held open: the turn's owner
(`TurnService.chat`, or the stream's end it hands the lease to) calls `release()` once, in a `finally`;
a second call does nothing, and the release runs shielded (or cannot be interrupted: an exit that never
suspends), so a client that leaves (a cancelled task) cannot leave the conversation locked.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class TurnLease(Generic[T]):
    """An entered async context (the conversation's hold) that `release()` exits exactly once."""

    def __init__(self, context: AbstractAsyncContextManager[T], held: T, *, exit_waits: bool = True) -> None:
        self._context = context
        self.held = held
        self._exit_waits = exit_waits
        self.released = False
        self.handed_over = False  # a stream owns the release now, not the caller that acquired it

    @classmethod
    async def acquire(
        cls, context: AbstractAsyncContextManager[T], *, exit_waits: bool = True
    ) -> TurnLease[T]:
        """Enter `context` (wait for the hold) and keep it until `release()`.

        `exit_waits=False` says the context's exit never suspends (an in-process lock): nothing can cancel it
        midway, so it needs no shield (a cancel scope costs some 20 us of a turn's CPU under load).
        """
        return cls(context, await context.__aenter__(), exit_waits=exit_waits)

    def hand_over(self) -> TurnLease[T]:
        """Pass the release to a stream's generator: the acquirer's `release_unless_handed_over` skips it."""
        self.handed_over = True
        return self

    async def release(self) -> None:
        """Exit the context, once, shielded from cancellation; later calls do nothing."""
        if self.released:
            return
        self.released = True
        with anyio.CancelScope(shield=True) if self._exit_waits else contextlib.nullcontext():
            await self._context.__aexit__(None, None, None)

    async def release_unless_handed_over(self) -> None:
        """The acquirer's release: done here, unless a stream took the lease over."""
        if not self.handed_over:
            await self.release()


__all__ = ["TurnLease"]
