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

RDP composes by addition; a total RDP curve converts to (epsilon, delta)-DP with the bound of
Canonne, Kamath and Steinke ("The Discrete Gaussian for Differential Privacy", NeurIPS 2020,
Proposition 12, also used by Opacus):
epsilon = min over alpha of eps(alpha) + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1).

Sampling uses numpy's Poisson sampler over a generator seeded from ``os.urandom`` (fresh for
every query), vectorised over every noised value at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

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
    """How much one person can move a noised vector, in its integer units (L1 and L2 norms)."""

    l1: float
    l2: float


def rdp(variance: float, sens: Sensitivity, orders: Sequence[int] = ORDERS) -> npt.NDArray[np.float64]:
    """RDP curve of Sk(``variance``) noise on a vector of sensitivity ``sens`` (Agarwal et al. 2021)."""
    a = np.asarray(orders, dtype=np.float64)
    v = float(variance)
    lead = a * sens.l2**2 / (2 * v)
    tail = np.minimum(((2 * a - 1) * sens.l2**2 + 6 * sens.l1) / (4 * v * v), 3 * sens.l1 / (2 * v))
    out: npt.NDArray[np.float64] = lead + tail
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
    composed curve."""
    if eps <= 0:
        raise ValueError(f"epsilon must be positive, not {eps}")
    if not sens:
        return []

    def spent(c: float) -> float:
        curve = sum((rdp(c * s.l2**2, s) for s in sens), np.zeros(len(ORDERS)))
        return epsilon(curve, delta)

    lo, hi = 1e-6, 1.0
    while spent(hi) > eps:
        hi *= 4
        if hi > 1e30:
            raise ValueError("no noise level reaches this epsilon")
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if spent(mid) <= eps else (mid, hi)
    return [hi * s.l2**2 for s in sens]


def query_rdp(variances: Sequence[float], sens: Sequence[Sensitivity]) -> npt.NDArray[np.float64]:
    """The RDP curve of one query: the sum over its noised vectors."""
    total = np.zeros(len(ORDERS))
    for v, s in zip(variances, sens, strict=True):
        total = total + rdp(v, s)
    return total


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
