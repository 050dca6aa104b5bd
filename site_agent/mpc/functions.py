"""Fixed-point functions on arithmetic shares: reciprocal, division, square root, exp, log, sigmoid.

Method: Catrina and Saxena, "Secure computation with fixed-point numbers" (FC 2010), and
Aly and Smart, "Benchmarking privacy preserving scientific operations" (ACNS 2019):
normalise the secret by the position of its most significant bit, approximate on the
normalised interval (linear start and Newton-Raphson iterations, or a polynomial), then
scale back.

Normalisation and the Newton-Raphson iterations are shared with :mod:`.linalg` and
:mod:`site_agent.query.numeric` and live in :mod:`.normalize`: X = x 2^f = mant 2^e with
|mant| in [0.5, 1] and a secret exponent e, public tables of e (powers such as 2^(62 - e)
among them) converted to arithmetic sharings by one batched bit injection, and the
iterations for 1/mant and 1/sqrt(mant). Other boolean words (the fraction and the one-hot
word in :func:`exp`, the shifted numerator in :func:`divide`) are converted the same way
(:func:`~site_agent.mpc.normalize.inject`, two rounds).

Working precision is the caller's f. Every product of two fixed-point values goes through
``mul_fixed``, so a result r is only correct while |r| < 2^(61 - 2f) (``max_product``/2:
2^29 for f = 16, 2^13 for f = 24); each function's domain below says what this means for its
argument. Outside a stated domain the result is unspecified (no error is raised: the
inputs are secret). The iteration counts and polynomial degrees grow with f so that the
relative error stays a few units of 2^-f; docs/fixed-point.md lists the measured errors.

Functions need 8 <= f <= 28 (the polynomials' products of values below 4 need 2f + 4 <= 62
bits; the Newton-Raphson iterations alone accept up to 30).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
import numpy.typing as npt

from .arithmetic import constant, mul, mul_fixed, trunc
from .boolean import a2b, and_many, not_, prefix_or, xor_public
from .fixed import FixedPoint
from .normalize import (
    WORD_ROW,
    Normalized,
    Table,
    exponent_onehot,
    inject,
    newton_steps,
    reciprocal_newton,
    rsqrt_newton,
    table_part,
)
from .normalize import normalize as normalize_bits
from .party import Party, Protocol
from .ring import ALL_ONES, parity
from .shares import AShare, BShare

__all__ = [
    "Normalized",
    "divide",
    "exp",
    "exponent_bits",
    "log",
    "newton_steps",
    "normalize",
    "poly_coefficients",
    "reciprocal",
    "rsqrt",
    "sigmoid",
    "sqrt",
]

MIN_FRAC_BITS, MAX_FRAC_BITS = 8, 28
EXP_RANGE = 32  # exp: 2^n for integer parts n in [-32, 31] via one 64-bit one-hot word
_ONE = np.uint64(1)
_BIT_MASKS = [sum(1 << j for j in range(64) if (j >> k) & 1) for k in range(6)]  # bit k of index j


def _check(fp: FixedPoint) -> int:
    f = fp.frac_bits
    if not MIN_FRAC_BITS <= f <= MAX_FRAC_BITS:
        raise ValueError(f"fixed-point functions need {MIN_FRAC_BITS} <= f <= {MAX_FRAC_BITS}, got f = {f}")
    return f


# ---------------------------------------------------------------------------------------------
# Local operations on boolean words


def _spread(b: BShare) -> BShare:
    """Bit 0 of each word copied to all 64 bits (XOR-linear, local)."""
    return BShare((b.v & _ONE) * ALL_ONES)


def _asr(b: BShare, bits: int) -> BShare:
    """Arithmetic right shift of each word (XOR-linear: sign bits combine like the words)."""
    return BShare((b.v.view(np.int64) >> np.int64(bits)).view(np.uint64))


def exponent_bits(onehot: BShare) -> list[BShare]:
    """Bits 0..5 of the position of the set bit, each in bit 0 of a word (local)."""
    return [BShare(parity(onehot.v & np.uint64(mask))) for mask in _BIT_MASKS]


def _and_all(p: Party, words: list[BShare]) -> Protocol[BShare]:
    """AND of several words: a balanced tree, ceil(log2 len) rounds."""
    while len(words) > 1:
        pairs = [(words[i], words[i + 1]) for i in range(0, len(words) - 1, 2)]
        rest = words[len(pairs) * 2 :]
        words = (yield from and_many(p, pairs)) + rest
    return words[0]


def _split(x: AShare, parts: int) -> list[AShare]:
    n = x.shape[0] // parts
    return [x[i * n : (i + 1) * n] for i in range(parts)]


def _const(p: Party, value: int, like: AShare) -> AShare:
    """A public ring element as a sharing of ``like``'s shape."""
    return constant(p, np.full(like.shape, value % 2**64, dtype=np.uint64), AShare)


def _fix(value: float, bits: int) -> int:
    return round(value * (1 << bits))


def normalize(
    p: Party, x: AShare, fp: FixedPoint, tables: Sequence[Table] = (), signed: bool = True
) -> Protocol[Normalized]:
    """x = mant 2^(e - f) with |mant| in [0.5, 1], and public tables of e at the secret e
    (:func:`site_agent.mpc.normalize.normalize` at the caller's f): 18 rounds."""
    return (yield from normalize_bits(p, x, _check(fp), tables, signed))


# ---------------------------------------------------------------------------------------------
# Reciprocal and division


def _nonzero(_e: int) -> int:
    """Table of 1: looked up, it is [x != 0] (and [x > 0] when normalising positive values)."""
    return 1


def _mant_scale(e: int) -> int:
    return 1 << (62 - e)


def reciprocal(p: Party, x: AShare, fp: FixedPoint) -> Protocol[AShare]:
    """1/x elementwise.

    Domain: 2^(2f - 61) < |x| < 2^(62 - f), i.e. |1/x| < 2^(61 - 2f) (every encodable
    |x| >= 2^-f for f <= 20; |x| > 2^-13 for f = 24). Error: below 4 * 2^-f * max(1, |1/x|)
    (relative error a few 2^-f once |1/x| >= 1; results below 2^-f may be 0). x == 0 gives 0.

    Normalisation x = mant 2^(e - f), then 1/x = (1/mant) 2^(f - e): 2^(2f - e) is a table
    (exactly 0 once 1/x < 2^-f), 1/mant comes from the Newton-Raphson iteration, started
    with the sign of mant (and at 0 for x == 0).
    """
    f = _check(fp)
    nz = yield from normalize_bits(p, x, f, [_nonzero, lambda e: (1 << (2 * f - e)) if e <= 2 * f else 0])
    nonzero, h = (v.ravel() for v in nz.values)
    scale = nonzero - nz.sign.ravel().lshift(1)
    out = yield from reciprocal_newton(p, nz.mant.ravel(), f, h=h, scale=scale)
    return out.reshape(*x.shape)


def _shift_right(p: Party, lo: BShare, hi: BShare, amount: list[BShare]) -> Protocol[BShare]:
    """Low word of the 128-bit signed (hi, lo) shifted right by a secret amount (6 rounds).

    ``amount`` holds the bits of the shift in bit 0 of each word; stage k shifts by 2^k where
    bit k is set: v ^= spread(b_k) & (v ^ (v >> 2^k)), the shifts being XOR-linear.
    """
    for k, b in enumerate(amount):
        s = 1 << k
        mask = _spread(b)
        pairs = [(mask, lo ^ lo.rshift(s) ^ hi.lshift(64 - s))]
        if k < len(amount) - 1:
            pairs.append((mask, hi ^ _asr(hi, s)))
        deltas = yield from and_many(p, pairs)
        lo = lo ^ deltas[0]
        if k < len(amount) - 1:
            hi = hi ^ deltas[1]
    return lo


def divide(p: Party, x: AShare, y: AShare, fp: FixedPoint) -> Protocol[AShare]:
    """x / y elementwise (shapes must match).

    Domain: y != 0, |x| < 2^(62 - f) and |x / y| < 2^(61 - 2f) (2^29 for f = 16, 2^13 for
    f = 24); y itself may be anything encodable. Error: below 6 * 2^-f * max(1, |x/y|), so
    the relative error is a few units of 2^-f once |x/y| >= 1 (1e-6 at f = 24 for means).
    y == 0 gives 0.

    y = mant 2^(e - f) is normalised; h = x 2^(f - e) = (x/y) mant is floor((X 2^f) / 2^e),
    a right shift by the secret e of the bits of X 2^f held as 128-bit boolean words (six
    conditional shifts by 2^k, one per bit of e). No product therefore involves x itself, whose
    magnitude is unrelated to that of x/y; then x/y = h * (1/mant) by Newton-Raphson.
    Rounds: 8 (a2b of x and y together) + 6 + 6 + 2 (one injection) + 2 + Newton.
    """
    f = _check(fp)
    if x.shape != y.shape:
        raise ValueError(f"divide needs equal shapes, got {x.shape} and {y.shape}")
    xf, yf = x.ravel(), y.ravel()
    n = yf.shape[0]
    bits = yield from a2b(p, AShare.concat([xf, yf]))
    bx, by = bits[:n], bits[n:]
    onehot = yield from exponent_onehot(p, by)
    h = yield from _shift_right(p, bx.lshift(f), _asr(bx, 64 - f), exponent_bits(onehot))
    scale, nonzero, sign, h_a = yield from inject(
        p, [table_part(onehot, by, [_mant_scale, _nonzero], signed=True), (h, [WORD_ROW])]
    )
    mant = yield from mul_fixed(p, yf, scale, 62 - f)
    q = yield from reciprocal_newton(p, mant, f, h=h_a, scale=nonzero - sign.lshift(1))
    return q.reshape(*x.shape)


# ---------------------------------------------------------------------------------------------
# Square root


def rsqrt(p: Party, x: AShare, fp: FixedPoint) -> Protocol[AShare]:
    """1/sqrt(x) elementwise.

    Domain: 2^(4f - 122) < x < 2^(62 - f), i.e. 1/sqrt(x) < 2^(61 - 2f) (every encodable x >= 2^-f
    for f <= 24). Error: below 4 * 2^-f * max(1, 1/sqrt(x)). x <= 0 gives 0.

    x = mant 2^(e - f); 1/sqrt(x) = mant^(-1/2) 2^((f - e)/2), the second factor (times 2^f)
    a public table rounded to an integer, the first by the Newton-Raphson iteration.
    """
    f = _check(fp)
    nz = yield from normalize_bits(p, x, f, [lambda e: round(2 ** ((3 * f - e) / 2))], signed=False)
    (r,) = yield from rsqrt_newton(p, nz.mant.ravel(), f)
    out = yield from mul_fixed(p, r, nz.values[0].ravel(), f)
    return out.reshape(*x.shape)


def sqrt(p: Party, x: AShare, fp: FixedPoint) -> Protocol[AShare]:
    """sqrt(x) elementwise, as (mant * T) * mant^(-1/2) with T = 2^((e + f)/2) a public table.

    Domain: 0 <= x < 2^(62 - f) and sqrt(x) < 2^(61 - 2f) (all encodable x for f <= 20;
    x < 2^26 for f = 24). Error: below 4 * 2^-f * max(1, sqrt(x)). x <= 0 gives 0.
    """
    f = _check(fp)
    nz = yield from normalize_bits(p, x, f, [lambda e: round(2 ** ((e + f) / 2))], signed=False)
    r, scaled = yield from rsqrt_newton(p, nz.mant.ravel(), f, nz.values[0].ravel())
    out = yield from mul_fixed(p, scaled, r, f)
    return out.reshape(*x.shape)


# ---------------------------------------------------------------------------------------------
# Polynomials, log, exp, sigmoid

_POLY_TARGETS: dict[str, Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]] = {
    "log_mant": lambda t: np.log((t + 3.0) / 4.0),  # ln(u) for u = (t + 3) / 4 in [0.5, 1]
    "exp2_frac": lambda t: np.exp2((t + 1.0) / 2.0),  # 2^phi for phi = (t + 1) / 2 in [0, 1]
}


@cache
def poly_coefficients(name: str, bits: int) -> tuple[int, ...]:
    """Power-basis coefficients (at ``bits`` fractional bits) of a Chebyshev interpolant on
    [-1, 1] of the lowest degree whose error is below 2^-(bits + 2)."""
    fn = _POLY_TARGETS[name]
    grid = np.linspace(-1.0, 1.0, 4001)
    exact = fn(grid)
    for degree in range(2, 40):
        cheb = np.polynomial.chebyshev.Chebyshev.interpolate(fn, degree)
        if float(np.max(np.abs(cheb(grid) - exact))) < 2.0 ** -(bits + 2):
            break
    power = np.polynomial.chebyshev.cheb2poly(cheb.coef)
    return tuple(_fix(float(c), bits) for c in power)


def _powers(p: Party, t: AShare, degree: int, f: int) -> Protocol[list[AShare]]:
    """[t, t^2, ..., t^degree] in ceil(log2 degree) rounds (each round multiplies the highest
    power so far by all lower ones, in one batched product)."""
    powers = [t]
    while len(powers) < degree:
        m = min(len(powers), degree - len(powers))
        prods = yield from mul_fixed(p, AShare.concat([powers[-1]] * m), AShare.concat(powers[:m]), f)
        powers += _split(prods, m)
    return powers


def _poly_sum(powers: list[AShare], coeffs: Sequence[int]) -> AShare:
    """sum_{k >= 1} c_k t^k at 2f fractional bits (local; truncate afterwards)."""
    acc = powers[0].mul_public(coeffs[1] % 2**64)
    for k in range(2, len(coeffs)):
        acc = acc + powers[k - 1].mul_public(coeffs[k] % 2**64)
    return acc


def log(p: Party, x: AShare, fp: FixedPoint) -> Protocol[AShare]:
    """Natural logarithm elementwise: ln x = (e - f) ln 2 + ln(mant), mant in [0.5, 1].

    ln(mant) is a polynomial in t = 4 mant - 3 whose degree grows with f; (e - f) ln 2 is a
    table. Domain: 0 < x < 2^(62 - f). Error: absolute, below 4 * 2^-f (so relative 1e-4
    at f = 16 wherever |ln x| >= 0.6). x <= 0 gives 0.
    """
    f = _check(fp)
    nz = yield from normalize_bits(p, x, f, [_nonzero, lambda e: _fix((e - f) * math.log(2), f)], signed=False)
    nonzero, offset = nz.values
    coeffs = poly_coefficients("log_mant", f)
    t = nz.mant.lshift(2) - nonzero.mul_public(3 << f)  # 0 where x <= 0
    powers = yield from _powers(p, t.ravel(), len(coeffs) - 1, f)
    acc = _poly_sum(powers, coeffs) + (nonzero.mul_public(coeffs[0] % 2**64) + offset).lshift(f).ravel()
    out = yield from trunc(p, acc, f)
    return out.reshape(*x.shape)


_LOG2_E = 1 / math.log(2)


def _scaled_log2e(p: Party, x: AShare, f: int) -> Protocol[tuple[BShare, int]]:
    """Bits of y = x log2(e) with ``point`` = 2f + 5 fractional bits (exact product, no
    truncation: a2b reads any bit position). Needs |x| < 2^(57 - 2f)."""
    point = 2 * f + 5
    bits = yield from a2b(p, x.mul_public(_fix(_LOG2_E, f + 5)))
    return bits, point


_BIT0 = [1] + [0] * 63  # bit 0 alone


def _low_bits(f: int) -> list[int]:
    """Coefficients reading the low f bits of a word as an integer."""
    return WORD_ROW[:f] + [0] * (64 - f)


def _pow2_parts(p: Party, bits: BShare, point: int, f: int) -> Protocol[tuple[BShare, BShare]]:
    """For y given by its bits (``point`` fractional bits): the fraction of y at f bits and
    the one-hot word of n + 32 for n = floor(y), zero unless -32 <= n < 32 (9 rounds).

    The one-hot word is the AND of six literals (bit j set iff bit k of j equals bit k of
    n + 32) and of "n in range" (the bits of n above bit 5 all equal its sign).
    """
    n = _asr(bits, point)
    frac = bits.rshift(point - f).and_public((1 << f) - 1)
    out_of_range = yield from prefix_or(p, (n ^ _spread(n.rshift(63))).rshift(5))
    idx = xor_public(p, n, np.uint64(EXP_RANGE))
    literals = [xor_public(p, _spread(idx.rshift(k)), np.uint64(~mask % 2**64)) for k, mask in enumerate(_BIT_MASKS)]
    literals.append(not_(p, _spread(out_of_range)))
    onehot = yield from _and_all(p, literals)
    return frac, onehot


def _exp2_poly(p: Party, frac: AShare, f: int) -> Protocol[AShare]:
    """2^phi for phi in [0, 1) at f bits (a polynomial in t = 2 phi - 1)."""
    coeffs = poly_coefficients("exp2_frac", f)
    t = frac.lshift(1) - _const(p, 1 << f, frac)
    powers = yield from _powers(p, t, len(coeffs) - 1, f)
    acc = _poly_sum(powers, coeffs) + _const(p, coeffs[0] << f, t)
    return (yield from trunc(p, acc, f))


def exp(p: Party, x: AShare, fp: FixedPoint) -> Protocol[AShare]:
    """e^x elementwise, as 2^y for y = x log2(e): 2^floor(y) by a one-hot table, 2^frac(y)
    by a polynomial.

    Domain: -2^(57 - 2f) < x < (61 - 2f) ln 2, i.e. e^x < 2^(61 - 2f) (and x < 32 ln 2 for
    f <= 14): upper limit 20.1 for f = 16, 9.0 for f = 24; lower limit -2^25 and -512.
    Error: relative below 4 * 2^-f for e^x >= 1, absolute below 4 * 2^-f under it. Inputs
    above the domain (up to 2^(57 - 2f)) give 0.
    """
    f = _check(fp)
    flat = x.ravel()
    bits, point = yield from _scaled_log2e(p, flat, f)
    frac, onehot = yield from _pow2_parts(p, bits, point, f)
    top = min(60 - 2 * f, EXP_RANGE - 1)
    table = [(1 << (j - EXP_RANGE + f)) if -f <= j - EXP_RANGE <= top else 0 for j in range(64)]
    frac_a, scale = yield from inject(p, [(frac, [_low_bits(f)]), (onehot, [table])])
    mantissa = yield from _exp2_poly(p, frac_a, f)
    out = yield from mul_fixed(p, mantissa, scale, f)
    return out.reshape(*x.shape)


def sigmoid(p: Party, x: AShare, fp: FixedPoint) -> Protocol[AShare]:
    """1 / (1 + e^-x) elementwise, symmetric in sign: s(|x|) = 1/(1 + 2^-|y|), y = x log2 e,
    then s(x) = s(|x|) or 1 - s(|x|).

    -|y| is read off the bits of y locally (~(y ^ sign), 1 unit off), 2^-|y| in (0, 1] as in
    :func:`exp`, and 1/v for v = 1 + 2^-|y| in (1, 2] by Newton on v/2 in (0.5, 1] (no
    normalisation needed). Domain: |x| < 2^(57 - 2f) (2^25 for f = 16, 512 for f = 24).
    Error: absolute below 4 * 2^-f.
    """
    f = _check(fp)
    flat = x.ravel()
    bits, point = yield from _scaled_log2e(p, flat, f)
    sign = bits.rshift(63)
    frac, onehot = yield from _pow2_parts(p, not_(p, bits ^ _spread(sign)), point, f)
    table = [(1 << (j - EXP_RANGE + f)) if -f <= j - EXP_RANGE <= 0 else 0 for j in range(64)]
    frac_a, scale, sign_a = yield from inject(p, [(frac, [_low_bits(f)]), (onehot, [table]), (sign, [_BIT0])])
    mantissa = yield from _exp2_poly(p, frac_a, f)
    small = yield from mul_fixed(p, mantissa, scale, f)
    # u = (1 + 2^-|y|) / 2 at g = f + 1 bits is the same integer as 1 + 2^-|y| at f bits, and
    # s(|x|) = 1/(2u) at f bits is (1/4) / u at g bits.
    g = f + 1
    u = small + _const(p, 1 << f, small)
    half = yield from reciprocal_newton(p, u, g, h=_const(p, 1 << (g - 2), u))
    flip = yield from mul(p, sign_a, _const(p, 1 << f, half) - half.lshift(1))
    return (half + flip).reshape(*x.shape)
