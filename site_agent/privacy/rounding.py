"""Rounding released counts to a multiple of a public base on shares (policy ``round_counts``).

The exact count is never opened: each cell's count x becomes base * round_half_up(x / base) =
base * floor((x + floor(base / 2)) / base) before its reveal point.

The division by the public base is exact for counts x < 2^bits and bases below 2^bits (the
plan's counts stay below 2^24). Then y = x + floor(base / 2) < 2^(bits + 1); with
s = bits + 1 + ceil(log2(base)) and M = ceil(2^s / base), floor(y M / 2^s) = floor(y / base)
(Granlund and Montgomery, "Division by invariant integers using multiplication", PLDI 1994,
theorem 4.2: e = M base - 2^s < base, so y e < 2^s, and the error term y e / (base 2^s) stays
below 1 / base, less than the gap between y / base and the next integer). The share truncation
(:func:`site_agent.mpc.arithmetic.trunc`) may round up by one instead of down, so the quotient q
is then corrected with one batch of comparisons of the remainder y - base q with 0 and base.
The product y M stays below 2^(2 bits + 2), far below the truncation's 2^62 limit for
bits = 24.
"""

from __future__ import annotations

import numpy as np

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare


def _const(p: Party, value: int, shape: tuple[int, ...]) -> AShare:
    return ar.constant(p, np.full(shape, value, dtype=np.int64).view(np.uint64), AShare)


def round_to_base(p: Party, x: AShare, base: int, bits: int) -> Protocol[AShare]:
    """base * round_half_up(x / base), exactly, for counts 0 <= x < 2^bits and 2 <= base < 2^bits."""
    if not 2 <= base < 1 << bits:
        raise ValueError("a rounding base must be from 2 to 2^bits - 1")
    shift = bits + 1 + (base - 1).bit_length()
    multiplier = -(-(1 << shift) // base)
    y = x + _const(p, base // 2, x.shape)
    q = yield from ar.trunc(p, y.mul_public(np.int64(multiplier)), shift)
    rem = y - q.mul_public(np.int64(base))
    n = x.shape[0]
    below = yield from bo.lt(
        p, AShare.concat([rem, rem]), AShare.concat([_const(p, 0, x.shape), _const(p, base, x.shape)])
    )
    q = q - below[:n] + (_const(p, 1, x.shape) - below[n:])  # rem < 0: one less; rem >= base: one more
    return q.mul_public(np.int64(base))
