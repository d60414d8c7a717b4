"""Keep large numpy temporaries in the heap of a long-lived worker (glibc only).

A worker stepping hundreds of 1 s windows per tick allocates tens of MB of
temporaries every few milliseconds. glibc serves allocations above its mmap
threshold (at most 32 MiB by default) with fresh ``mmap`` pages and returns
them on free, so every tick pays page faults for memory it just released:
measured 25-30 % of a 64-device tick. Raising the mmap and trim thresholds
keeps that memory in the heap for reuse. Best effort: a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Bytes: allocations below this come from the heap, and the heap is not trimmed below it.
THRESHOLD_BYTES = 512 * 1024 * 1024


def tune_allocator(threshold_bytes: int = THRESHOLD_BYTES) -> bool:
    """Raise glibc's mmap/trim thresholds for this process; True if applied."""
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold_bytes))
    if not ok:
        log.debug("mallopt refused the thresholds; keeping glibc defaults")
    return ok
