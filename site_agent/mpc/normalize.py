"""Normalisation by the most significant bit, and Newton-Raphson iterations on mantissas.

Method: Catrina and Saxena, "Secure computation with fixed-point numbers" (FC 2010), and
Aly and Smart, "Benchmarking privacy preserving scientific operations" (ACNS 2019):
write a secret as x = m 2^e with m in [1/2, 1] and a secret exponent e, evaluate public
tables of e, and run Newton-Raphson iterations for 1/m or 1/sqrt(m) on the mantissa.
:mod:`.functions`, :mod:`.linalg` and :mod:`site_agent.query.numeric` all build on it.

Exponent (:func:`exponent_onehot`). ``a2b`` gives the bits of X (a ring element, signed or
not). With s the sign bit and W = X ^ (s s ... s) (|X|, or |X| - 1 for negative X), the word
w = 2W + s has its most significant bit at position e with 2^(e-1) <= |X| <= 2^e for every
X != 0 (w = 0 only for X = 0); for non-negative X, 2^(e-1) <= X < 2^e, e the bit length.
:func:`~site_agent.mpc.boolean.prefix_or` and ``r ^ (r >> 1)`` give the one-hot word of e.

Tables (:func:`inject`). Because exactly one bit is set, any public table T(e) is the
public linear combination sum_j T(j) b_j of the one-hot bits b_j. Such combinations of
shared bits are computed by bit injection (ABY3, Mohassel and Rindal, CCS 2018, section
5.3) folded into an inner product: member 0 knows t = b_0 ^ b_1 and shares it
arithmetically as (t - x_1, x_1, 0) (one word per bit, to member 2); with b = t + b_2 - 2 t b_2,
the linear part is local and the cross term sum_j T(j) t_j b_2j is a sum of local products
of members 1 and 2, reshared once per table. Two rounds in all, however many tables.

Mantissa (:func:`normalize`). m = trunc(X 2^(62 - e), 62 - f) = X 2^(f - e), |m| in [1/2, 1]
at f fractional bits; the product before truncation is at most 2^62 by construction. With
``magnitude`` the mantissa is that of |X| = W + s (W injected too), so it is never negative.

Newton-Raphson (:func:`reciprocal_newton`, :func:`rsqrt_newton`) for 1/m and 1/sqrt(m) on
m in [1/2, 1], from linear minimax starts, at a working precision of up to 30 fractional
bits (every product stays below 2^62 there). The number of iterations follows from the
start's error and the target precision (:func:`newton_steps`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .arithmetic import constant, mul_fixed, new_pair, reshare
from .boolean import a2b, prefix_or
from .party import Party, Protocol, exchange
from .ring import ALL_ONES
from .shares import AShare, BShare

MAX_WORK_BITS = 30  # Newton iterations: products of values below 2.2 at 2f bits stay below 2^62
_ONE = np.uint64(1)
_TOP = np.uint64(1 << 63)

Table = Callable[[int], int]  # a function of the exponent e in [0, 62]; reduced modulo 2^64
Rows = Sequence[Sequence[int]]  # public coefficients, one row of 64 (one per bit) for each output


# ---------------------------------------------------------------------------------------------
# Public linear combinations of shared bits


def _matrix(rows: Rows) -> np.ndarray:
    out = np.zeros((len(rows), 64), dtype=np.uint64)
    for k, row in enumerate(rows):
        if len(row) != 64:
            raise ValueError(f"a coefficient row needs 64 entries, got {len(row)}")
        out[k] = [int(c) % 2**64 for c in row]
    return out


def inject(p: Party, parts: Sequence[tuple[BShare, Rows]]) -> Protocol[list[AShare]]:
    """sum_j rows[k][j] * (bit j of b) for each (b, rows) and each row k, as arithmetic sharings.

    All words b have one shape, which the results keep. Bit injection with inner products
    (module docstring): 2 rounds; member 0 sends member 2 one word per element and bit
    position that some row uses, then every member sends one word per element and row.
    """
    shape = parts[0][0].shape
    n = parts[0][0].size
    mats = [_matrix(rows) for _, rows in parts]
    outputs = sum(m.shape[0] for m in mats)
    bit_blocks, coeff_blocks, at = [], [], 0
    for (word, _), mat in zip(parts, mats, strict=True):
        if word.shape != shape:
            raise ValueError(f"inject needs words of one shape, got {word.shape} and {shape}")
        cols = np.flatnonzero(mat.any(axis=0)).astype(np.uint64)
        bit_blocks.append((word.v.reshape(2, n)[..., None] >> cols) & _ONE)
        block = np.zeros((cols.size, outputs), dtype=np.uint64)
        block[:, at : at + mat.shape[0]] = mat[:, cols.astype(np.intp)].T
        coeff_blocks.append(block)
        at += mat.shape[0]
    bits = np.concatenate(bit_blocks, axis=2)  # (2, n, used bits): this member's two components
    coeffs = np.concatenate(coeff_blocks, axis=0)
    used = bits.shape[2]
    with np.errstate(over="ignore"):
        if p.index == 0:  # holds b_0, b_1; shares t = b_0 ^ b_1 as (t - x_1, x_1, 0)
            x1 = p.rand.stream(1, n * used).reshape(n, used)
            x0 = (bits[0] ^ bits[1]) - x1
            yield from exchange(send={2: x0.reshape(-1)})
            linear = (x0 @ coeffs, x1 @ coeffs)
            cross = np.zeros((n, outputs), dtype=np.uint64)
        elif p.index == 1:  # holds x_1 and b_2
            x1 = p.rand.stream(1, n * used).reshape(n, used)
            b2 = bits[1]
            linear = (x1 @ coeffs, b2 @ coeffs)
            cross = (x1 * b2) @ coeffs
        else:  # holds b_2 and receives x_0
            got = yield from exchange(expect={0: n * used})
            x0 = got[0].reshape(n, used)
            b2 = bits[0]
            linear = (b2 @ coeffs, x0 @ coeffs)
            cross = (x0 * b2) @ coeffs
        masked = cross + p.rand.zero_share(n * outputs).reshape(n, outputs)
    pair = new_pair(masked.shape)
    pair[0] = masked
    products = yield from reshare(p, pair, AShare)
    out = AShare.from_pair(*linear) - products.lshift(1)
    return [out[:, k].reshape(*shape) for k in range(outputs)]


def table_row(fn: Table) -> list[int]:
    """A table of e in [0, 62] as a coefficient row for a one-hot word (e = 63 maps to 0)."""
    return [fn(e) for e in range(63)] + [0]


# ---------------------------------------------------------------------------------------------
# Exponent and normalisation


def _spread(b: BShare) -> BShare:
    """Bit 0 of each word copied to all 64 bits (XOR-linear, local)."""
    return BShare((b.v & _ONE) * ALL_ONES)


def exponent_onehot(p: Party, bits: BShare, signed: bool = True) -> Protocol[BShare]:
    """The one-hot word of e from the boolean words of X (6 rounds).

    With ``signed``, 2^(e-1) <= |X| <= 2^e; otherwise negative X give e = 63, which every
    table maps to 0, so they behave like 0.
    """
    if signed:
        s = bits.rshift(63)
        w = (bits ^ _spread(s)).lshift(1) ^ s
    else:
        w = bits.lshift(1)
    prefix = yield from prefix_or(p, w)
    return prefix ^ prefix.rshift(1)


SIGN_ROW = [0] * 63 + [1]  # bit 63 alone
WORD_ROW = [1 << j for j in range(64)]  # the whole word as an integer


def table_part(onehot: BShare, bits: BShare, tables: Sequence[Table], signed: bool) -> tuple[BShare, Rows]:
    """What :func:`inject` needs for ``tables`` at the one-hot word, then (if ``signed``) the
    sign bit of ``bits``: bit 63 of the one-hot word (e = 63) is 0 in every table, so the
    sign travels there."""
    rows = [table_row(t) for t in tables]
    if not signed:
        return onehot, rows
    return onehot.and_public(~_TOP) ^ bits.rshift(63).lshift(63), [*rows, SIGN_ROW]


def exponent_tables(
    p: Party, x: AShare, tables: Sequence[Table], signed: bool = True, magnitude: bool = False
) -> Protocol[tuple[list[AShare], AShare, AShare | None]]:
    """Tables T(e) at the exponent e of x, [x < 0] (0 unless ``signed``), and |x| if ``magnitude``.

    Values are 0 where x == 0 (and for negative x unless ``signed``). Cost: a2b, prefix-OR,
    injection: 16 rounds; about 56 words per element for the first two, then 64 for the
    injected bits (63 more with ``magnitude``) and 3 per table.
    """
    flat = x.ravel()
    bits = yield from a2b(p, flat)
    onehot = yield from exponent_onehot(p, bits, signed)
    parts = [table_part(onehot, bits, tables, signed)]
    if signed and magnitude:  # |X| = W + s with W = X ^ (s s ... s)
        parts.append((bits ^ _spread(bits.rshift(63)), [[*WORD_ROW[:63], 0]]))
    vals = yield from inject(p, parts)
    values = [v.reshape(*x.shape) for v in vals[: len(tables)]]
    if not signed:
        zero = constant(p, np.zeros(x.shape, dtype=np.uint64), AShare)
        return values, zero, (x if magnitude else None)
    sign = vals[len(tables)].reshape(*x.shape)
    absolute = (vals[len(tables) + 1] + vals[len(tables)]).reshape(*x.shape) if magnitude else None
    return values, sign, absolute


@dataclass(frozen=True)
class Normalized:
    """x = mant * 2^(e - f) for a secret exponent e, with table values looked up at e.

    ``mant``: f fractional bits, |mant| in [0.5, 1] (0 for x == 0, and for x < 0 when
    normalising only positive values; never negative when normalising the magnitude).
    ``sign``: [x < 0] as 0/1 (all 0 when normalising positive values only). ``values``:
    T(e) for each requested table, as ring elements (0 where x == 0 or out of the
    requested sign range).
    """

    mant: AShare
    sign: AShare
    values: list[AShare]


def _mantissa_scale(e: int) -> int:
    return 1 << (62 - e)


def normalize(
    p: Party,
    x: AShare,
    frac_bits: int,
    tables: Sequence[Table] = (),
    signed: bool = True,
    magnitude: bool = False,
) -> Protocol[Normalized]:
    """Normalise x (module docstring) to a mantissa with ``frac_bits`` fractional bits.

    ``tables`` are functions of e in [0, 62] evaluated publicly; their values at the secret
    e come back as sharings in ``values``. ``magnitude`` (signed inputs only) normalises |x|.
    Cost: 18 rounds (a2b 8, prefix-OR 6, injection 2, the truncated product 2).
    """
    if not 1 <= frac_bits <= 61:
        raise ValueError(f"mantissas need 1 <= frac_bits <= 61, got {frac_bits}")
    if magnitude and not signed:
        raise ValueError("the magnitude of a value read as unsigned is the value itself")
    values, sign, absolute = yield from exponent_tables(p, x, [_mantissa_scale, *tables], signed, magnitude)
    source = x if absolute is None else absolute
    mant = yield from mul_fixed(p, source.ravel(), values[0].ravel(), 62 - frac_bits)
    return Normalized(mant.reshape(*x.shape), sign, values[1:])


# ---------------------------------------------------------------------------------------------
# Newton-Raphson iterations


@dataclass(frozen=True)
class Start:
    """Initial approximation a - b m on [1/2, 1] (b an integer, so it is local), minimax in
    relative error, with that error and the error growth e -> growth * e^2 of one step."""

    a: float
    b: int
    error: float
    growth: float


RECIPROCAL_START = Start(2.9282, 2, 0.0718, 1.0)  # 1/m ~ 2.9282 - 2m
RSQRT_START = Start(1.9511, 1, 0.0490, 1.5)  # 1/sqrt(m) ~ 1.9511 - m


def newton_steps(start_error: float, growth: float, bits: int) -> int:
    """Newton iterations until the relative error e -> growth * e^2 is below 2^-(bits + 1)."""
    steps, err = 0, start_error
    while err > 2.0 ** -(bits + 1):
        steps, err = steps + 1, growth * err * err
    return steps


def _check_work(bits: int) -> None:
    if not 2 <= bits <= MAX_WORK_BITS:
        raise ValueError(f"Newton iterations need 2 <= working bits <= {MAX_WORK_BITS}, got {bits}")


def _const(p: Party, value: int, like: AShare) -> AShare:
    return constant(p, np.full(like.shape, value % 2**64, dtype=np.uint64), AShare)


def _fix(value: float, bits: int) -> int:
    return round(value * (1 << bits))


def _split(x: AShare, parts: int) -> list[AShare]:
    n = x.shape[0] // parts
    return [x[i * n : (i + 1) * n] for i in range(parts)]


def reciprocal_newton(
    p: Party,
    mant: AShare,
    frac_bits: int,
    h: AShare | None = None,
    scale: AShare | None = None,
    out_bits: int | None = None,
    start: Start = RECIPROCAL_START,
) -> Protocol[AShare]:
    """h / mant (or 1/mant with ``out_bits`` fractional bits) for |mant| in [1/2, 1] at
    ``frac_bits``, by the Newton-Raphson iteration z <- z (2 - mant z). Flat arrays.

    Start z0 = scale * a - b * mant with ``scale`` = 1 by default; callers pass
    [x != 0] - 2 [x < 0] so that the start has the sign of mant and is 0 for mant = 0 (0
    stays 0). Iterations run at ``frac_bits`` and reach a relative error below
    2^-(out_bits + 1); the last one works at ``out_bits`` (default ``frac_bits``) and
    multiplies by h on the way: (h z)(2 - mant z), one round less than a separate product.
    The result has h's fractional bits; |h z| must stay below 2^(61 - out_bits) in units.
    """
    f = frac_bits
    g = f if out_bits is None else out_bits
    _check_work(f)
    if not 2 <= g <= f:
        raise ValueError(f"out_bits must be in [2, {f}], got {g}")
    steps = newton_steps(start.error, start.growth, g)
    if steps < 2:
        raise ValueError("the start is already exact at this precision")
    lead = _const(p, _fix(start.a, f), mant) if scale is None else scale.mul_public(_fix(start.a, f))
    z = lead - mant.mul_public(start.b)
    two = _const(p, 2 << f, mant)
    mant_g = mant
    for k in range(steps - 1):
        if k == 0 and g < f:  # mant at g bits for the last step, in the same round
            both = yield from mul_fixed(p, AShare.concat([mant, mant]), AShare.concat([z, _const(p, 1 << g, z)]), f)
            t, mant_g = _split(both, 2)
        else:
            t = yield from mul_fixed(p, mant, z, f)
        z = yield from mul_fixed(p, z, two - t, f if k < steps - 2 else 2 * f - g)
    factor = _const(p, 1 << g, mant) if h is None else h
    both = yield from mul_fixed(p, AShare.concat([mant_g, factor]), AShare.concat([z, z]), g)
    t, hz = _split(both, 2)
    return (yield from mul_fixed(p, hz, _const(p, 2 << g, mant) - t, g))


def rsqrt_newton(
    p: Party, mant: AShare, frac_bits: int, also: AShare | None = None, start: Start = RSQRT_START
) -> Protocol[list[AShare]]:
    """[1/sqrt(mant)] for mant in [1/2, 1] (or 0) at ``frac_bits``, then mant * ``also`` if given.

    Newton-Raphson r <- 1.5 r - mant r^3 / 2 in two rounds: [r^2, mant r], then
    [(mant r) r^2, r] truncated by f + 1 (r/2 + r gives 1.5 r). ``also`` is multiplied by
    mant in the first round at no extra cost. Flat arrays.
    """
    f = frac_bits
    _check_work(f)
    r = _const(p, _fix(start.a, f), mant) - mant.mul_public(start.b)
    one = _const(p, 1 << f, mant)
    pending = [] if also is None else [(mant, also)]
    extra: list[AShare] = []
    for _ in range(newton_steps(start.error, start.growth, f)):
        pairs = [(r, r), (mant, r), *pending]
        out = yield from mul_fixed(p, AShare.concat([a for a, _ in pairs]), AShare.concat([b for _, b in pairs]), f)
        sq, mr, *done = _split(out, len(pairs))
        extra, pending = extra + done, []
        both = yield from mul_fixed(p, AShare.concat([mr, r]), AShare.concat([sq, one]), f + 1)
        cube, half = _split(both, 2)
        r = r + half - cube
    return [r, *extra]
