"""Division and square roots on shares, normalised so statistics keep their relative precision.

Fixed point alone cannot give a mean of 0.003 and a variance of 2e6 the same relative precision
in a 64-bit ring, so every output ratio is computed as a *canonical floating-point triple*
(sign, mantissa, exponent): value = (-1)^sign * (mantissa / 2^30) * 2^exponent with the
mantissa in [1, 2) (or 0 for the value 0). The triple is a function of the value alone, so
revealing it discloses exactly the value and nothing else (no trace of the inputs' magnitudes).

Ingredients, all vectorized over whole arrays, from :mod:`site_agent.mpc.normalize` (shared
with the fixed-point functions; Catrina and Saxena, FC 2010):

* normalisation x = m 2^e with m in [1/2, 1] (A2B, prefix-OR, one bit injection of the
  one-hot word of e), public tables of e (the exponent itself, powers of two);
* Newton-Raphson iterations for 1/m and 1/sqrt(m) on m in [1/2, 1] at FN = 30 fractional bits,
  from linear minimax starts (four iterations reach 2^-31).

Relative error of an output ratio is below 2^-27 (about 7.5e-9); square roots below 2^-27.
Inputs must stay below 2^62 in the ring (the exact truncation's limit). The mantissa of an
output is in [1, 2] (2 only when rounding meets the top of the range); a zero value is (0, 0, 0).

:func:`divide_fixed` and :func:`sqrt_fixed` return ordinary fixed-point values for
intermediate quantities whose range is known (pooled means, Wilson and Byar terms); their range
conditions are stated on each function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.normalize import exponent_tables, inject, normalize, reciprocal_newton, rsqrt_newton
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare

FN = 30  # working precision of mantissas (fractional bits)
_ONE = 1 << FN
_SQRT2 = round(math.sqrt(2) * 2**FN)


@dataclass(frozen=True)
class Float:
    """One party's shares of canonical floating-point values (see module docstring)."""

    sign: AShare
    mant: AShare
    exp: AShare

    @staticmethod
    def concat(parts: list[Float]) -> Float:
        return Float(*(AShare.concat([getattr(f, a) for f in parts]) for a in ("sign", "mant", "exp")))

    def __getitem__(self, index: object) -> Float:
        return Float(self.sign[index], self.mant[index], self.exp[index])


def decode_float(sign: np.ndarray, mant: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """Opened triples to float64 values (the analyst's side)."""
    s = sign.view(np.int64).astype(np.float64)
    m = mant.view(np.int64).astype(np.float64) / _ONE
    e = exponent.view(np.int64).astype(np.float64)
    out: np.ndarray = (1.0 - 2.0 * s) * np.ldexp(m, e.astype(np.int64))
    return out


def _const(p: Party, values: object, shape: tuple[int, ...]) -> AShare:
    arr = np.broadcast_to(np.asarray(values, dtype=np.int64).view(np.uint64), shape).copy()
    return ar.constant(p, arr, AShare)


def _identity(e: int) -> int:
    return e


def _one(_e: int) -> int:
    return 1


# Exponents E of floats satisfy |E| < 2^15, so bits 15..63 all equal the sign bit 63:
# E = sum_{j < 15} 2^j b_j - 2^15 b_63, floor(E / 2) = sum_{1 <= j < 15} 2^(j-1) b_j - 2^14 b_63.
_HALF_ROW = [0] + [1 << (j - 1) for j in range(1, 15)] + [0] * 48 + [-(1 << 14)]
_ODD_ROW = [1] + [0] * 63


def divide_float(p: Party, num: AShare, den: AShare, offset: np.ndarray) -> Protocol[Float]:
    """num / den as canonical floats; ``offset`` (public, per element) is added to the exponent.

    ``num`` is any signed ring value, ``den`` a positive one, both below 2^62 in magnitude.
    With num at fx and den at fy fractional bits, pass offset = fy - fx.

    Both are normalised together (|num| = a 2^en, den = b 2^ed, a and b in [1/2, 1]); the
    Newton-Raphson iteration gives q = a / b in [1/2, 2], doubled when below 1. Rounds: 18 +
    16 + 10 + 1.
    """
    n = num.shape[0]
    nz = yield from normalize(p, AShare.concat([num, den]), FN, [_identity, _one], signed=True, magnitude=True)
    exponent, nonzero = nz.values
    q = yield from reciprocal_newton(p, nz.mant[n:], FN, h=nz.mant[:n])
    low = yield from bo.lt(p, q, _const(p, _ONE, q.shape))
    e = ar.add_public(p, exponent[:n] - exponent[n:], np.asarray(offset, dtype=np.int64).view(np.uint64))
    nz_num = nonzero[:n]
    # q (1 + low); the exponent e - low, set to 0 for a zero numerator so that it tells nothing.
    prods = yield from ar.mul(p, AShare.concat([low, nz_num, nz_num]), AShare.concat([q, e, low]))
    doubled, e_kept, low_kept = prods[:n], prods[n : 2 * n], prods[2 * n :]
    return Float(nz.sign[:n], q + doubled, e_kept - low_kept)


def sqrt_float(p: Party, x: Float) -> Protocol[Float]:
    """Square root of non-negative canonical floats.

    x = m 2^E with m in [1, 2): sqrt(x) = sqrt(u) c 2^floor(E/2) with u = m/2 in [1/2, 1) and
    c = sqrt(2) for even E, 2 for odd E; floor(E/2) and E's parity are public linear
    combinations of E's bits (one A2B, one injection).
    """
    u = yield from ar.trunc(p, x.mant, 1)
    bits = yield from bo.a2b(p, x.exp)
    odd, half = yield from inject(p, [(bits, [_ODD_ROW, _HALF_ROW])])
    c = _const(p, _SQRT2, odd.shape) + odd.mul_public(np.int64((2 << FN) - _SQRT2))
    r, uc = yield from rsqrt_newton(p, u, FN, also=c)
    root = yield from ar.mul_fixed(p, uc, r, FN)
    return Float(_const(p, 0, root.shape), root, half)


def divide_fixed(
    p: Party, num: AShare, den: AShare, fx: int, fy: int, fo: int, den_bits: int, fw: int
) -> Protocol[AShare]:
    """num / den at ``fo`` fractional bits, for intermediates of known range.

    num at ``fx`` bits (signed), den at ``fy`` bits, positive and below 2^den_bits in the ring.
    Range: |num/den| * 2^(den_bits - 1 + fx - fy) < 2^62 and |num/den| * 2^(fo + fw + 1) < 2^62.
    The reciprocal keeps ``fw`` bits (relative error 2^-fw).

    den = b 2^e with b in [1/2, 1); one product round gives b at FN bits and
    t = num 2^(fy - fx + fo - e) = (num/den) b at ``fo`` bits (both through the tables
    2^(k + ... - e) and one truncation by k), then t / b by Newton-Raphson with the last
    iteration at ``fw`` bits. Rounds: 16 + 2 + Newton.
    """
    k = max(1, den_bits + fx - fy - fo)
    tables = [  # e <= den_bits by the contract; 0 beyond keeps the injection to den_bits + 1 bits
        lambda e: (1 << (k + FN - e)) if e <= den_bits else 0,
        lambda e: (1 << (k + fy - fx + fo - e)) if e <= den_bits else 0,
    ]
    (mscale, nscale), _, _ = yield from exponent_tables(p, den, tables, signed=False)
    both = yield from ar.mul_fixed(p, AShare.concat([den, num]), AShare.concat([mscale, nscale]), k)
    n = den.shape[0]
    return (yield from reciprocal_newton(p, both[:n], FN, h=both[n:], out_bits=fw))


def sqrt_fixed(p: Party, v: AShare, fv: int, fo: int) -> Protocol[AShare]:
    """sqrt(v) at ``fo`` bits for v >= 0 at ``fv`` bits (fv even, v < 2^62 in the ring).

    Needs 30 + fv/2 - fo >= 1. v = u 2^e with u in [1/2, 1): sqrt(v) = (sqrt(u) c) 2^floor(e/2)
    with c = 2^(e/2 - floor(e/2)) (1 or sqrt(2), a table at FN bits) and the power of two an
    exact table.
    """
    nz = yield from normalize(
        p, v, FN, [lambda e: _ONE if e % 2 == 0 else _SQRT2, lambda e: 1 << (e // 2)], signed=False
    )
    c, top = nz.values
    r, uc = yield from rsqrt_newton(p, nz.mant, FN, also=c)
    root = yield from ar.mul_fixed(p, uc, r, FN)  # sqrt(v) / 2^floor(e/2) at FN bits
    return (yield from ar.mul_fixed(p, root, top, FN + fv // 2 - fo))
