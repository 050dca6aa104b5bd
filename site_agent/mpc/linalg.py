"""Small dense solves and inverses of secret symmetric positive definite matrices.

Method: the Newton-Schulz iteration X <- X (2I - A X) (Schulz 1933; Ben-Israel 1965;
Pan and Schreiber, SIAM J. Sci. Stat. Comput. 1991) on a normalised matrix, in fixed
point with more fractional bits than the caller's format. Every iteration is two
``matmul_fixed`` calls over the whole k x k matrix (6 message hops), so k = 50 costs the
same number of rounds as k = 2; there is no pivot, no secret division and no square root.
The iteration is self-correcting: rounding errors of one step are damped by the next.

Normalisation (inside MPC, data independent). With t = tr(A) in the ring and e its bit
length (2^(e-1) <= t < 2^e), A' = A 2^(f-e) has trace in [1/2, 1), hence eigenvalues in
(0, 1), and X_0 = I converges: I - A' X_j = (I - A')^(2^j). The secret powers of two
2^(c-e) are public tables of e at the secret e (:func:`site_agent.mpc.normalize.exponent_tables`:
A2B, prefix-OR, one bit injection; 16 rounds); multiplying by them and truncating by a
public amount is an exact rescaling (less than one unit of error).

Requirements, with s = ``range_bits`` (default 16) and a public bound ``cond`` on the
condition number (default 1e3):

* A symmetric positive definite (not checked: the iteration then fails silently), of
  condition number at most ``cond``;
* 1 <= tr(A) 2^f < 2^(61 - s), i.e. tr(A) < 2^29 for f = 16; a trace well above 2^-f
  keeps A's own precision;
* every entry of the solution (or of the inverse) below 2^s in magnitude, and
  |b_i| < 2^s tr(A).

Internal precision. X has norm at most 1 / lambda_min(A') <= 2 k cond =: M, and its
product with 2I - A' X must stay below 2^62, so X carries F = floor((61 - log2 M) / 2)
fractional bits (22 for k = 50, cond = 1e3; 23 for k = 10) and A' carries 60 - F (its
product with X is at most 1), so normalising loses none of A's bits. The normalised
right-hand side carries G = 61 - s - F bits. ceil(log2(M (F + 2) ln 2)) iterations bring
the residual I - A' X to the rounding floor, about 2^-F per entry.

Accuracy. The rounding floor of the residual bounds the relative error of the solution
by about cond sqrt(k) 2^-F; measured on random SPD matrices of condition 1e3 it is 1e-5 to
7e-5 (k = 10 and 50) relative to numpy.linalg.solve on the same encoded inputs, at f = 16
and at f = 24 alike (the internal precision, not f, sets it). An inverse is returned with
f bits, so its error is about the output resolution 2^-f per entry.
"""

from __future__ import annotations

import math

import numpy as np

from .arithmetic import constant, matmul_fixed, mul_fixed, trunc
from .fixed import FixedPoint
from .normalize import exponent_tables
from .party import Party, Protocol
from .shares import AShare

DEFAULT_COND = 1e3
DEFAULT_RANGE_BITS = 16


def plan(k: int, cond: float) -> tuple[int, int]:
    """Internal fractional bits F and iteration count for a k x k matrix of condition <= cond."""
    bound = math.log2(2 * k * cond)
    frac = int((61 - math.ceil(bound)) // 2)
    if frac < 8:
        raise ValueError(f"condition bound {cond:g} is too large for k = {k} in a 64-bit ring")
    return frac, math.ceil(bound + math.log2((frac + 2) * math.log(2)))


def pow2_scales(p: Party, t: AShare, tops: tuple[int, ...]) -> Protocol[AShare]:
    """2^(c - e) for each c in ``tops``, where e is the bit length of the positive ring value t.

    One table per c, 2^(c - e) (zero when e > c), all at once from the one-hot word of e
    (:func:`site_agent.mpc.normalize.exponent_tables`, 16 rounds). Result shape
    ``t.shape + (len(tops),)``.
    """
    tables = [lambda e, c=c: (1 << (c - e)) if e <= c else 0 for c in tops]
    values, _, _ = yield from exponent_tables(p, t, tables, signed=False)
    return AShare.concat([v[..., None] for v in values], axis=len(t.shape))


def _normalised_inverse(
    p: Party, a: AShare, b: AShare | None, cond: float, range_bits: int
) -> Protocol[tuple[AShare, AShare, AShare, int]]:
    """X ~ A'^-1 with F bits, the scale 2^(61 - s - e), b' = b 2^(f - e) with G bits, and F.

    Without b, b' is empty.
    """
    k = a.shape[0]
    rhs = AShare(np.zeros((2, 0), dtype=np.uint64)) if b is None else b.ravel()
    if a.shape != (k, k) or (b is not None and b.shape[0] != k):
        raise ValueError(f"need a square matrix and a matching right-hand side, got {a.shape} and {rhs.shape}")
    frac, iterations = plan(k, cond)
    diag = np.arange(k)
    scales = yield from pow2_scales(p, a[diag, diag].sum(), (60, 61 - range_bits))
    m_a, m_b = scales[0], scales[1]
    mults = [AShare(np.broadcast_to(m.v[:, None], (2, n))) for m, n in ((m_a, k * k), (m_b, rhs.size))]
    # A 2^(60 - e) / 2^F = A' with 60 - F bits; b 2^(61 - s - e) / 2^F = b' with G = 61 - s - F bits.
    scaled = yield from mul_fixed(p, AShare.concat([a.ravel(), rhs]), AShare.concat(mults), frac)
    a_n = scaled[: k * k].reshape(k, k)
    two = constant(p, np.eye(k, dtype=np.uint64) << np.uint64(frac + 1), AShare)
    x = constant(p, np.eye(k, dtype=np.uint64) << np.uint64(frac), AShare)
    for _ in range(iterations):
        ax = yield from matmul_fixed(p, a_n, x, 60 - frac)
        x = yield from matmul_fixed(p, x, two - ax, frac)
    return x, m_b, scaled[k * k :], frac


def solve(
    p: Party,
    a: AShare,
    b: AShare,
    fp: FixedPoint,
    cond: float = DEFAULT_COND,
    range_bits: int = DEFAULT_RANGE_BITS,
) -> Protocol[AShare]:
    """x with A x = b for SPD A (k, k) and b (k,) or (k, m), all fixed point in ``fp``.

    x = A'^-1 b' (module docstring), one final matrix product truncated to f bits.
    The iteration count sets the rounds: 96 for k = 10 and 104 for k = 50 at cond 1e3 (as
    counted by ``Stats.rounds``), independent of k otherwise; k^2 words per matrix product.
    """
    x, _, b_n, _ = yield from _normalised_inverse(p, a, b, cond, range_bits)
    return (yield from matmul_fixed(p, x, b_n.reshape(*b.shape), 61 - range_bits - fp.frac_bits))


def inverse(
    p: Party, a: AShare, fp: FixedPoint, cond: float = DEFAULT_COND, range_bits: int = DEFAULT_RANGE_BITS
) -> Protocol[AShare]:
    """A^-1 for SPD A (k, k) in fixed point ``fp``: A^-1 = 2^(f - e) A'^-1.

    A'^-1 is first brought to f bits, then multiplied by 2^(61 - s - e) and truncated by
    61 - s - f, which needs |A^-1| < 2^s entrywise. Six rounds more than the iteration.
    """
    x, m_b, _, frac = yield from _normalised_inverse(p, a, None, cond, range_bits)
    if frac > fp.frac_bits:
        x = yield from trunc(p, x, frac - fp.frac_bits)
    else:
        x = x.lshift(fp.frac_bits - frac)
    return (yield from mul_fixed(p, x, m_b, 61 - range_bits - fp.frac_bits))
