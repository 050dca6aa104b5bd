"""Fixed-point encoding of reals in Z_2^64.

A real x is stored as the ring element round(x * 2^f) (two's complement). The engine
default is f = 16 fractional bits, as in MP-SPDZ's ``sfix`` and CrypTen.

Ranges (f = 16):

* encodable: |x| < 2^(62 - f) = 2^46 (about 7.0e13). Values of at most 2^62 in the ring
  are what the exact truncation accepts, so sums of encodable values stay safe as long as
  their total stays below that bound.
* a product before truncation carries 2f fractional bits, so ``mul_fixed`` needs
  |x * y| < 2^(62 - 2f) = 2^30 (about 1.07e9). Callers keep secret products in range by
  construction: statistics are computed from pre-aggregates normalised with public
  bounds (see docs/fixed-point.md).
* resolution 2^-f (1.5e-5); encoding rounds to nearest (error <= 2^-(f+1)), one
  truncation adds less than one unit 2^-f (probabilistic rounding, unbiased).

Out-of-range or non-finite input is an :class:`EncodingError`, never a silent wrap; its text
names the range, never the value. (A site's pre-aggregates are range-checked before encoding
and an out-of-range one suppresses its cell, see ``site_agent/query/failsafe.py``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import EncodingError
from .ring import U64, signed

DEFAULT_FRAC_BITS = 16
TRUNC_LIMIT_BITS = 62  # exact truncation accepts |value| < 2^62 in the ring


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point format: ``frac_bits`` fractional bits in Z_2^64."""

    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 30:
            raise EncodingError(f"fractional bits must be in [0, 30], got {self.frac_bits}")

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    @property
    def max_abs(self) -> float:
        """Largest magnitude that encodes: 2^(62 - f)."""
        return float(2 ** (TRUNC_LIMIT_BITS - self.frac_bits))

    @property
    def max_product(self) -> float:
        """Largest |x * y| that ``mul_fixed`` handles exactly: 2^(62 - 2f)."""
        return float(2 ** (TRUNC_LIMIT_BITS - 2 * self.frac_bits))

    def encode(self, values: npt.ArrayLike) -> U64:
        """Reals to ring elements; raises :class:`EncodingError` when out of range."""
        x = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise EncodingError("cannot encode NaN or infinite values")
        if x.size and float(np.max(np.abs(x))) >= self.max_abs:
            # The text never quotes the value: it may be a patient's, and errors reach logs.
            raise EncodingError(
                f"a value exceeds the fixed-point range |x| < 2^{TRUNC_LIMIT_BITS - self.frac_bits} "
                f"(f = {self.frac_bits})"
            )
        return np.rint(x * self.scale).astype(np.int64).view(np.uint64)

    def decode(self, elements: U64) -> npt.NDArray[np.float64]:
        """Ring elements to reals."""
        return signed(np.asarray(elements, dtype=np.uint64)).astype(np.float64) / self.scale


def encode_int(values: npt.ArrayLike) -> U64:
    """Integers (counts, codes) to ring elements with range |v| < 2^62 checked."""
    x = np.asarray(values)
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)) or not np.all(x == np.rint(x)):
            raise EncodingError("integer encoding needs finite whole numbers")
        x = x.astype(np.int64)
    if x.dtype.kind not in "iub":
        raise EncodingError(f"cannot encode dtype {x.dtype} as integers")
    if x.size and (int(np.max(x)) >= 2**TRUNC_LIMIT_BITS or int(np.min(x)) <= -(2**TRUNC_LIMIT_BITS)):
        raise EncodingError(f"integer out of range |v| < 2^{TRUNC_LIMIT_BITS}")
    return x.astype(np.int64).view(np.uint64)


def decode_int(elements: U64) -> npt.NDArray[np.int64]:
    """Ring elements to signed integers."""
    return signed(np.asarray(elements, dtype=np.uint64)).copy()
