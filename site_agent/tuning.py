"""Process tuning for MPC work: keep freed large arrays in the heap.

The engine allocates arrays of millions of words per round. glibc serves allocations above
its mmap threshold (128 KiB by default, adapting upwards) with fresh ``mmap`` pages and
unmaps them on free, so every round pays page faults to zero-fill new memory: measured here,
the first protocol runs in a fresh process were 2-5x slower than later ones, and
comparisons ran at half speed throughout. Raising the mmap threshold to its maximum (32 MiB
on 64-bit glibc) and the trim threshold keeps freed memory in the heap for reuse; memory
returns to the system only above the trim threshold.

Linux with glibc only; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's cap on 64-bit systems
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 * 1024 * 1024

_done = False


def tune_allocator() -> bool:
    """Apply the settings once per process; True if glibc accepted them."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = all(
        mallopt(option, value) == 1
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    _done = ok
    return ok
