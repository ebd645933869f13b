"""Give memory that the process has freed back to the operating system."""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    return getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only: musl and macOS have none


def release() -> None:
    """Collect garbage, then return the C heap's free pages to the system (glibc's `malloc_trim(0)`).

    For after a one-time step that built large temporary data (the tokenizer's rank table, migrations):
    glibc keeps freed memory in its heaps and arenas for reuse, and a serving process never needs that much
    again. A no-op for the C heap where malloc_trim does not exist.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
