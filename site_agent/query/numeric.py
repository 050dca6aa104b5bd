"""Division and square roots on shares, normalised so statistics keep their relative precision.

Fixed point alone cannot give a mean of 0.003 and a variance of 2e6 the same relative precision
in a 64-bit ring, so every output ratio is computed as a *canonical floating-point triple*
(sign, mantissa, exponent): value = (-1)^sign * (mantissa / 2^30) * 2^exponent with the
mantissa in [1, 2) (or 0 for the value 0). The triple is a function of the value alone, so
revealing it discloses exactly the value and nothing else (no trace of the inputs' magnitudes).

Ingredients, all vectorized over whole arrays:

* bit-length one-hots: one :func:`boolean.lt` of x against every power 2^j (or 4^j) gives
  [2^j <= x < 2^(j+1)]; public linear combinations of the one-hot then give the exponent j and
  the normalising factor 2^(J-1-j) locally.
* Newton iterations for 1/m on m in [1, 2) and 1/sqrt(q) on q in [1, 4), at 30 fractional
  bits, from minimax linear starts (relative error 0.086, four iterations reach 2^-30).

Relative error of an output ratio is below 2^-27 (about 7.5e-9); square roots below 2^-27.
Inputs must stay below 2^62 in the ring (the exact truncation's limit).

:func:`divide_fixed` and :func:`sqrt_fixed` return ordinary fixed-point values for
intermediate quantities whose range is known (pooled means, Wilson and Byar terms); their range
conditions are stated on each function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare

FN = 30  # working precision of mantissas (fractional bits)
_ONE = 1 << FN
_RECIP_U = round(2.9142 * 2**FN)  # 1/m ~ (2.9142 - m) / 2 on [1, 2)
_RSQRT_A, _RSQRT_B = round(1.06638627 * 2**FN), round(0.1523409 * 2**FN)  # 1/sqrt(q) ~ a - b q on [1, 4)
NEWTON_STEPS = 4


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


def _expand(x: AShare, n: int) -> AShare:
    """x repeated along a new last axis of length n (local)."""
    return AShare(np.repeat(x.v[..., None], n, axis=-1))


def bit_onehot(p: Party, x: AShare, count: int, width: int = 1) -> Protocol[AShare]:
    """One-hot over j < count of [2^(width j) <= x < 2^(width (j+1))], shape (*x.shape, count).

    For x = 0 the first position is set. Assumes 0 <= x < 2^(width * count) and
    width * count <= 62 (one vectorized comparison of ``count`` thresholds per element).
    """
    thresholds = np.array([1 << (width * j) for j in range(1, count + 1)], dtype=np.int64)
    below = yield from bo.lt(p, _expand(x, count), _const(p, thresholds, (*x.shape, count)))
    prev = AShare(np.concatenate([np.zeros_like(below.v[..., :1]), below.v[..., :-1]], axis=-1))
    return below - prev


def _combine(onehot: AShare, coeffs: list[int]) -> AShare:
    """Sum_j onehot_j * coeffs_j (public coefficients): local."""
    return onehot.mul_public(np.array(coeffs, dtype=np.int64)).sum(axis=len(onehot.shape) - 1)


def recip_mantissa(p: Party, m: AShare) -> Protocol[AShare]:
    """1/m at FN bits for m in [1, 2) at FN bits (Newton, 4 iterations, rel. error < 2^-29)."""
    u = _const(p, _RECIP_U, m.shape) - m  # u = 2 w0 with w0 = (2.9142 - m) / 2
    e = yield from ar.mul_fixed(p, m, u, FN)  # m u ~ 2
    w = yield from ar.mul_fixed(p, u, _const(p, 4 << FN, m.shape) - e, FN + 2)  # w1 = u (4 - m u) / 4
    for _ in range(NEWTON_STEPS - 1):
        e = yield from ar.mul_fixed(p, m, w, FN)
        w = yield from ar.mul_fixed(p, w, _const(p, 2 << FN, m.shape) - e, FN)
    return w


def rsqrt_mantissa(p: Party, q: AShare) -> Protocol[AShare]:
    """1/sqrt(q) at FN bits for q in [1, 4) at FN bits (Newton, 4 iterations)."""
    y = _const(p, _RSQRT_A, q.shape) - (yield from ar.trunc(p, q.mul_public(np.int64(_RSQRT_B)), FN))
    for _ in range(NEWTON_STEPS):
        y2 = yield from ar.mul_fixed(p, y, y, FN)
        t = yield from ar.mul_fixed(p, q, y2, FN)
        y = yield from ar.mul_fixed(p, y, _const(p, 3 << FN, q.shape) - t, FN + 1)
    return y


def _normalise(p: Party, x: AShare) -> Protocol[tuple[AShare, AShare]]:
    """x in [1, 2^62) as (mantissa in [1, 2) at FN bits, exponent j) with x ~ mantissa 2^j."""
    onehot = yield from bit_onehot(p, x, 62)
    scale = _combine(onehot, [1 << (61 - j) for j in range(62)])
    exponent = _combine(onehot, list(range(62)))
    wide = yield from ar.mul(p, x, scale)  # in [2^61, 2^62)
    mant = yield from ar.trunc(p, wide, 61 - FN)
    return mant, exponent


def divide_float(p: Party, num: AShare, den: AShare, offset: np.ndarray) -> Protocol[Float]:
    """num / den as canonical floats; ``offset`` (public, per element) is added to the exponent.

    ``num`` is any signed ring value, ``den`` a positive one, both below 2^62 in magnitude.
    With num at fx and den at fy fractional bits, pass offset = fy - fx.
    """
    sign = yield from bo.ltz(p, num)
    flip = yield from ar.mul(p, sign, num)
    absnum = num - flip.lshift(1)
    both = AShare.concat([absnum, den])
    mant, exponent = yield from _normalise(p, both)
    n = num.shape[0]
    w = yield from recip_mantissa(p, mant[n:])
    q = yield from ar.mul_fixed(p, mant[:n], w, FN)  # in (1/2, 2)
    low = yield from bo.lt(p, q, _const(p, _ONE, q.shape))
    q = q + (yield from ar.mul(p, low, q))
    e = exponent[:n] - exponent[n:] - low
    e = ar.add_public(p, e, np.asarray(offset, dtype=np.int64).view(np.uint64))
    return Float(sign, q, e)


def sqrt_float(p: Party, x: Float) -> Protocol[Float]:
    """Square root of non-negative canonical floats."""
    bits = yield from bo.a2b(p, x.exp)
    odd = yield from bo.bit_inject(p, bits)
    q = x.mant + (yield from ar.mul(p, odd, x.mant))  # in [1, 4)
    half = yield from ar.trunc(p, x.exp - odd, 1)  # exact: the exponent is even
    y = yield from rsqrt_mantissa(p, q)
    root = yield from ar.mul_fixed(p, q, y, FN)
    return Float(_const(p, 0, q.shape), root, half)


def divide_fixed(
    p: Party, num: AShare, den: AShare, fx: int, fy: int, fo: int, den_bits: int, fw: int
) -> Protocol[AShare]:
    """num / den at ``fo`` fractional bits, for intermediates of known range.

    num at ``fx`` bits (signed), den at ``fy`` bits, positive and below 2^den_bits in the ring.
    Range: |num/den| * 2^(den_bits - 1 + fx - fy) < 2^62 and |num/den| * 2^(fo + fw + 1) < 2^62.
    The reciprocal keeps ``fw`` bits (relative error 2^-fw).
    """
    onehot = yield from bit_onehot(p, den, den_bits)
    scale = _combine(onehot, [1 << (den_bits - 1 - j) for j in range(den_bits)])
    wide = yield from ar.mul(p, den, scale)  # in [2^(den_bits-1), 2^den_bits)
    shift = FN - den_bits + 1
    mant = wide.lshift(shift) if shift >= 0 else (yield from ar.trunc(p, wide, -shift))
    w = yield from recip_mantissa(p, mant)
    if fw < FN:
        w = yield from ar.trunc(p, w, FN - fw)
    t1 = den_bits - 1 + fx - fy - fo
    if t1 > 0:
        t = yield from ar.mul_fixed(p, num, scale, t1)
    else:
        t = (yield from ar.mul(p, num, scale)).lshift(-t1)
    return (yield from ar.mul_fixed(p, t, w, fw))


def sqrt_fixed(p: Party, v: AShare, fv: int, fo: int) -> Protocol[AShare]:
    """sqrt(v) at ``fo`` bits for v >= 0 at ``fv`` bits (fv even, v < 2^62 in the ring).

    Needs 30 + fv/2 - fo >= 1.
    """
    onehot = yield from bit_onehot(p, v, 31, width=2)
    scale = _combine(onehot, [1 << (2 * (30 - j)) for j in range(31)])
    top = _combine(onehot, [1 << j for j in range(31)])
    wide = yield from ar.mul(p, v, scale)  # in [2^60, 2^62)
    q = yield from ar.trunc(p, wide, 60 - FN)  # in [1, 4) at FN bits
    y = yield from rsqrt_mantissa(p, q)
    root = yield from ar.mul_fixed(p, q, y, FN)  # sqrt(q) at FN bits
    return (yield from ar.mul_fixed(p, root, top, FN + fv // 2 - fo))
