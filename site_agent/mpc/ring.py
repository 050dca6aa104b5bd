"""The ring Z_2^64 as numpy ``uint64`` arrays.

Addition, subtraction and multiplication of ``uint64`` arrays wrap modulo 2^64, which
is exactly ring arithmetic. This module holds the few helpers the protocols need on
top of that: signed views, bit reversal and parity on bit-packed words.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RING_BITS = 64
DTYPE = np.dtype(np.uint64)
U64 = npt.NDArray[np.uint64]

ONE = np.uint64(1)
ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def asring(values: npt.ArrayLike) -> U64:
    """Integers (signed or not) as ring elements: two's complement modulo 2^64."""
    arr = np.asarray(values)
    if arr.dtype == DTYPE:
        return arr
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64, copy=False).view(np.uint64) if arr.dtype.kind != "u" else arr.astype(np.uint64)
    raise TypeError(f"ring elements must be integers, got dtype {arr.dtype}")


def signed(values: U64) -> npt.NDArray[np.int64]:
    """Ring elements read as signed 64-bit integers (two's complement)."""
    return values.view(np.int64)


def parity(words: U64) -> U64:
    """XOR of all 64 bits of each word (0 or 1). XOR-linear, so it works on shares."""
    w = words.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        w ^= w >> np.uint64(shift)
    return w & ONE


_REV8 = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)


def reverse_bits(words: U64) -> U64:
    """Bit i of each word moved to bit 63 - i. XOR-linear, so it works on shares."""
    as_bytes = words.astype("<u8", copy=False).view(np.uint8).reshape(*words.shape, 8)
    flipped = _REV8[as_bytes[..., ::-1]]
    return np.ascontiguousarray(flipped).view("<u8").reshape(words.shape).astype(np.uint64, copy=False)
