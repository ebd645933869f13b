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


def freeze() -> None:
    """Keep everything alive now (what start-up loaded, which lives as long as the process) out of the
    collector's full passes: each walked it, ~65 ms every few seconds under load. Serving processes only."""
    if _serving:
        gc.freeze()


def unfreeze() -> None:
    """Undo `freeze` (at shutdown)."""
    if _serving:
        gc.unfreeze()
