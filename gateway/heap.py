"""The memory policy of a serving process: give freed memory back, keep long-lived objects from the collector.

Only a process that `gateway serve` runs applies it (`cli/serve.py` calls `serving()` before anything starts
threads). An application embedded in another process (tests, an ASGI host) leaves that process's heap alone:
there a full collection walks the host's objects too (~0.1-0.4 s in the test suite, per start).
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable

_serving = False


def serving() -> None:
    """Apply the policy in this process from now on (a process that `gateway serve` runs)."""
    global _serving
    _serving = True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    return getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only: musl and macOS have none


def release() -> None:
    """Collect garbage, then return the C heap's free pages to the system (glibc's `malloc_trim(0)`).

    For after a one-time step that built large temporary data (the tokenizer's rank table, migrations):
    glibc keeps freed memory in its heaps and arenas for reuse, and a serving process never needs that much
    again. A no-op for the C heap where malloc_trim does not exist, and outside a serving process.
    """
    if not _serving:
        return
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# The collector's first threshold while serving (CPython's default: 700). A request allocates a few hundred
# container objects, almost all freed by reference counting when it ends; at 700 the collector ran a young
# pass every request or two, ~3% of a turn's CPU under load (measured: 0.82 -> 0.80 ms per turn).
SERVING_GEN0_THRESHOLD = 20_000


def freeze() -> None:
    """Keep everything alive now (what start-up loaded, which lives as long as the process) out of the
    collector's full passes: each walked it, ~65 ms every few seconds under load. The young generation is
    collected less often too (`SERVING_GEN0_THRESHOLD`). Serving processes only."""
    if _serving:
        gc.freeze()
        _, *older = gc.get_threshold()
        gc.set_threshold(SERVING_GEN0_THRESHOLD, *older)


def unfreeze() -> None:
    """Undo `freeze` (at shutdown)."""
    if _serving:
        gc.unfreeze()
