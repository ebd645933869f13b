"""CPU work on big inputs goes to a worker thread, so that no request stalls the event loop.

Parsing, validating, counting and serializing a body costs about a millisecond per 100 KB on the loop;
a 30 MB message (or 100,000 tiny ones) would stall every other request for seconds. Work on inputs
above THREAD_THRESHOLD bytes runs in anyio's worker threads instead (the GIL is released often enough
for the loop to keep serving, each slice well under 50 ms); small inputs stay on the loop, where a
thread hand-off would cost more than the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread

T = TypeVar("T")

THREAD_THRESHOLD = 64 * 1024


async def run_sized(size: int, work: Callable[[], T]) -> T:
    """Run `work` on the loop for inputs of `size` bytes up to THREAD_THRESHOLD, else in a worker thread."""
    if size <= THREAD_THRESHOLD:
        return work()
    return await anyio.to_thread.run_sync(work)
