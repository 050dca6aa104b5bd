"""The distributed Skellam mechanism: noise that no committee member knows, added on shares.

Construction (Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private
Federated Learning", NeurIPS 2021). The symmetric Skellam distribution Sk(V) with variance V is
the difference of two independent Poisson(V/2) variables; it is integer valued and closed under
summation (Sk(V1) + Sk(V2) = Sk(V1 + V2)). So each of the three committee members samples its
own Sk(V/2) per noised value and inputs it, secret-shared, like a site's pre-aggregate; the
committee adds the three samples to the pooled value on shares, and only the noised value is
ever opened. The sum of any two members' samples is already Sk(V), the distribution the
privacy accounting below is computed for.

What a corrupted member can and cannot do (honest majority, semi-honest, as the engine):

* it knows its own sample, so it can subtract it from an opened value; what remains still
  carries the two honest members' Sk(V), which it cannot learn or remove (their samples reach it
  only as uniformly random shares). The guarantee stated by ``--explain`` is this worst case:
  the analyst colluding with one member; the analyst alone faces Sk(1.5 V).
* it cannot see the un-noised pooled value: nothing opens it, anywhere.
* an actively cheating member could input a sample of the wrong size (for example a huge value
  that swamps the result); that breaks accuracy, not privacy, since the honest members' noise
  is added all the same (the engine is semi-honest, see docs/architecture.md).

Accounting. For integer-valued outputs whose neighbouring datasets (one person added or removed)
differ by at most Delta1 in L1 and Delta2 in L2 norm, Sk(V) noise per coordinate is
(alpha, eps(alpha))-RDP for integer alpha > 1 with (Agarwal et al., Theorem 3.5, in the
variance parametrization of their code)::

    eps(alpha) <= alpha Delta2^2 / (2 V) + min(((2 alpha - 1) Delta2^2 + 6 Delta1) / (4 V^2), 3 Delta1 / (2 V))

That bound is loose for the small variances of counts (at V = 15 it is about 1.4 times the true
divergence). Where one person moves the vector by at most 1 in a single coordinate (a count or a
histogram with one row per person), :func:`rdp` uses the exact Renyi divergence instead
(:func:`exact_rdp`): D_alpha(Sk(V) || Sk(V) + 1), summed over the Skellam pmf computed here with
numpy, with a proven bound on the part of the sum outside the window. It is the quantity
Agarwal et al. bound, so every property below (composition, conversion) holds unchanged; the
divergence for a shift of -1 is the same (the pmf is symmetric), and a shift of 0 costs nothing.
Each order's value is the smaller of the two, both valid upper bounds.

RDP composes by addition (Mironov, "Renyi Differential Privacy", CSF 2017); a total RDP curve
converts to (epsilon, delta)-DP with the bound of Canonne, Kamath and Steinke ("The Discrete
Gaussian for Differential Privacy", NeurIPS 2020, Proposition 12, also used by Opacus):
epsilon = min over alpha of eps(alpha) + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1).
A query is calibrated on its own curve and the accountant adds the curves of an analyst's
queries, so the spent budget after one query is exactly the epsilon that query was calibrated
to, and after several it is a valid (epsilon, delta) bound of their composition.

Sampling uses numpy's Poisson sampler over a generator seeded from ``os.urandom`` (fresh for
every query), vectorised over every noised value at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

ORDERS: tuple[int, ...] = (*range(2, 64), *range(64, 257, 8), 384, 512, 768, 1024)
"""The integer Renyi orders the accountant tracks (the theorem holds for integer alpha)."""

MEMBERS = 3
"""Committee members, each adding Sk(V / 2): any two honest ones give Sk(V)."""

POISSON_PART = 1e12
"""numpy's Poisson sampler loses accuracy for large means (its variance is 4% high at 1e15, 64%
at 1e17): a larger mean is drawn as the sum of equal parts of at most this mean (Poisson is
closed under summation, so the sum has exactly the asked distribution)."""
MAX_MEMBER_POISSON = 1e15
"""Beyond this mean (1,000 parts) a query is refused: its planner keeps noise in coarse units."""


@dataclass(frozen=True)
class Sensitivity:
    """How much one person can move a noised vector, in its integer units (L1 and L2 norms);
    ``one_cell``: the move lies in a single coordinate (a person's one row is in one cell)."""

    l1: float
    l2: float
    one_cell: bool = False


EXACT_MAX_VARIANCE = 4000.0
""":func:`exact_rdp` is used up to this variance (its window grows with it); above, the noise of
a unit shift is close to Gaussian and Agarwal et al.'s bound is within a few percent."""
EXACT_SLACK = 1e-9
""":func:`exact_rdp` rounds up by this, relative, and a thousandth of it absolute: far above the
float error of its sums (about 1e-14 in the logarithm of the sum)."""


def agarwal_rdp(variance: float, sens: Sensitivity, orders: Sequence[int] = ORDERS) -> npt.NDArray[np.float64]:
    """Agarwal et al.'s bound (Theorem 3.5) on the RDP of Sk(``variance``) on a vector of
    sensitivity ``sens``, for any shift within the norms."""
    a = np.asarray(orders, dtype=np.float64)
    v = float(variance)
    lead = a * sens.l2**2 / (2 * v)
    tail = np.minimum(((2 * a - 1) * sens.l2**2 + 6 * sens.l1) / (4 * v * v), 3 * sens.l1 / (2 * v))
    out: npt.NDArray[np.float64] = lead + tail
    return out


def rdp(variance: float, sens: Sensitivity, orders: Sequence[int] = ORDERS) -> npt.NDArray[np.float64]:
    """RDP curve of Sk(``variance``) noise on a vector of sensitivity ``sens``: the exact
    divergence where it applies (a unit move in one cell), else Agarwal et al.'s bound."""
    bound = agarwal_rdp(variance, sens, orders)
    if sens.one_cell and sens.l1 <= 1 and variance <= EXACT_MAX_VARIANCE:
        out: npt.NDArray[np.float64] = np.minimum(bound, exact_rdp(variance, orders))
        return out
    return bound


def skellam_logpmf(variance: float, top: int) -> npt.NDArray[np.float64]:
    """log P(k) of Sk(``variance``) (Poisson(V/2) - Poisson(V/2)) for k = 0..``top`` (the pmf is
    symmetric). P(k) = exp(-V) I_k(V) (modified Bessel function); the ratios I_{k+1}/I_k come from
    the backward recurrence I_{k-1} = (2k / V) I_k + I_{k+1} (Miller's algorithm, stable
    downwards), started far beyond ``top`` at Amos's lower bound on the ratio, and the level from
    the normalization P(0) + 2 sum_{k>=1} P(k) = 1. The sum is cut where the pmf is below
    e^-800 of its peak, so it is at most a hair small and every P(k) a hair large (by the same
    factor, which leaves the likelihood ratios exact)."""
    v = float(variance)
    start = int(top + v + 50 * math.sqrt(v) + 100)
    ratios = np.empty(start)
    r = v / (start + 1 + math.sqrt((start + 1) ** 2 + v * v))  # I_{start+1} / I_start, from below
    for k in range(start, 0, -1):  # ratios[k - 1] = I_k / I_{k-1}
        r = 1.0 / (2 * k / v + r)
        ratios[k - 1] = r
    rel = np.concatenate([[0.0], np.cumsum(np.log(ratios))])  # log I_k - log I_0, k = 0..start
    norm = np.logaddexp(0.0, math.log(2) + float(np.logaddexp.reduce(rel[1:])))
    out: npt.NDArray[np.float64] = rel[: top + 1] - norm
    return out


def skellam_log_tail(variance: float, k: float) -> float:
    """log of a Chernoff bound on P(|X| >= k) for X ~ Sk(V), k >= 0: its moment generating
    function is exp(V (cosh t - 1)); the best t = asinh(k / V) gives
    P(|X| >= k) <= 2 exp(-(k asinh(k / V) - sqrt(V^2 + k^2) + V))."""
    v = float(variance)
    return math.log(2) - (k * math.asinh(k / v) - math.sqrt(v * v + k * k) + v)


def exact_rdp(variance: float, orders: Sequence[int] = ORDERS) -> npt.NDArray[np.float64]:
    """The Renyi divergence D_alpha(Sk(V) || Sk(V) shifted by 1) at each order, rounded up.

    Summed over |k| < K of P(k)^alpha P(k - 1)^(1 - alpha); the rest, over |k| >= K, is at most
    sqrt(P(|X| >= K)) exp((alpha - 1) A(2 alpha - 1)) by Cauchy-Schwarz (sum of
    sqrt(P) sqrt(P (P/Q)^(2 alpha - 2)), the second factor at most the whole sum,
    exp((2 alpha - 2) D_{2 alpha - 1}), which Agarwal et al.'s bound A covers) and the Chernoff
    bound of :func:`skellam_log_tail`. Where that remainder is not negligible (large orders) the
    result exceeds Agarwal's bound, which :func:`rdp` then uses."""
    v = float(variance)
    window = int(v + 40 * math.sqrt(v) + 100)
    half = skellam_logpmf(v, window + 1)
    k = np.arange(-window + 1, window)
    log_p, log_q = half[np.abs(k)], half[np.abs(k - 1)]
    a = np.asarray(orders, dtype=np.float64)
    terms = a[:, None] * log_p[None, :] + (1 - a[:, None]) * log_q[None, :]
    inside = np.logaddexp.reduce(terms, axis=1)
    unit = Sensitivity(1.0, 1.0)
    doubled = [2 * int(x) - 1 for x in orders]
    log_rest = 0.5 * skellam_log_tail(v, window) + (a - 1) * agarwal_rdp(v, unit, doubled)
    out: npt.NDArray[np.float64] = np.logaddexp(inside, log_rest) / (a - 1) * (1 + EXACT_SLACK) + EXACT_SLACK / 1000
    return out


def epsilon(curve: Sequence[float] | npt.NDArray[np.float64], delta: float, orders: Sequence[int] = ORDERS) -> float:
    """(epsilon, delta)-DP of an RDP curve (Canonne, Kamath, Steinke 2020, Proposition 12)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), not {delta}")
    a = np.asarray(orders, dtype=np.float64)
    r = np.asarray(curve, dtype=np.float64)
    eps = r + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1)
    return max(0.0, float(np.min(eps)))


def calibrate(sens: Sequence[Sensitivity], eps: float, delta: float) -> list[float]:
    """The honest-pair variance V_j of each of several noised vectors released together so that
    their composition is (eps, delta)-DP.

    Every vector gets the same noise relative to its sensitivity, V_j = c * Delta2_j^2 (so each
    spends the same share of the budget), and the smallest c is found by bisection on the
    composed curve: first on Agarwal et al.'s bound alone (cheap), which brackets it, then on
    :func:`rdp` (never above that bound, so its c is never larger)."""
    if eps <= 0:
        raise ValueError(f"epsilon must be positive, not {eps}")
    if not sens:
        return []

    def spent(c: float, curve_of: Callable[[float, Sensitivity], npt.NDArray[np.float64]]) -> float:
        curve = sum((curve_of(c * s.l2**2, s) for s in sens), np.zeros(len(ORDERS)))
        return epsilon(curve, delta)

    def smallest(lo: float, hi: float, steps: int, curve_of: Callable[[float, Sensitivity], Any]) -> float:
        for _ in range(steps):
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if spent(mid, curve_of) <= eps else (mid, hi)
        return hi

    hi = 1.0
    while spent(hi, agarwal_rdp) > eps:
        hi *= 4
        if hi > 1e30:
            raise ValueError("no noise level reaches this epsilon")
    bound = smallest(1e-6, hi, 80, agarwal_rdp)
    c = bound if all(not s.one_cell for s in sens) else smallest(bound / 16, bound, 40, rdp)
    return [c * s.l2**2 for s in sens]


def query_rdp(variances: Sequence[float], sens: Sequence[Sensitivity]) -> npt.NDArray[np.float64]:
    """The RDP curve of one query: the sum over its noised vectors."""
    total = np.zeros(len(ORDERS))
    for v, s in zip(variances, sens, strict=True):
        total = total + rdp(v, s)
    return total


PLAN_DIGITS = 10
"""Significant digits of the variances and the curve a plan carries (:func:`for_plan`)."""


def round_up(x: float, margin: float = 0.0) -> float:
    """``x`` times (1 + ``margin``) rounded up to :data:`PLAN_DIGITS` significant digits."""
    y = x * (1 + margin)
    r = float(f"{y:.{PLAN_DIGITS - 1}e}")
    return r if r >= y else float(f"{y * (1 + 10.0 ** -(PLAN_DIGITS - 1)):.{PLAN_DIGITS - 1}e}")


def for_plan(variances: Sequence[float], sens: Sequence[Sensitivity]) -> tuple[list[float], list[float]]:
    """The calibrated variances and their query's RDP curve as a plan carries them: in round
    decimal numbers, so that members whose numpy builds differ in the last bits of a logarithm
    still compile the same plan digest. Both are rounded up (more noise; a curve above the
    divergence): each variance by a margin of 1e-7 first, so its curve falls by more than the
    curve's own rounding adds, and the query's epsilon stays at most the one asked for."""
    rounded = [round_up(v, 1e-7) for v in variances]
    return rounded, [round_up(float(x)) for x in query_rdp(rounded, sens)]


def member_variance(variance: float) -> float:
    """The variance each member's own sample has: V / 2, so two honest members give V."""
    return variance / 2


def released_sd(variance: float) -> float:
    """Standard deviation of the noise in an opened value: all three members' samples, 1.5 V."""
    return math.sqrt(MEMBERS * member_variance(variance))


def generator() -> np.random.Generator:
    """A fresh generator seeded with 256 bits from the operating system's CSPRNG."""
    return np.random.Generator(np.random.PCG64(int.from_bytes(os.urandom(32), "little")))


def sample(member_var: float, size: int, rng: np.random.Generator | None = None) -> npt.NDArray[np.int64]:
    """``size`` draws of Sk(``member_var``): Poisson(member_var / 2) - Poisson(member_var / 2)."""
    lam = member_var / 2
    if lam > MAX_MEMBER_POISSON:
        raise ValueError("the noise is too large to sample: raise epsilon")
    rng = rng or generator()
    parts = max(1, math.ceil(lam / POISSON_PART))
    pair = rng.poisson(lam / parts, size=(parts, 2, size)).sum(axis=0)
    out: npt.NDArray[np.int64] = (pair[0] - pair[1]).astype(np.int64)
    return out
