"""Harrell's concordance index on shares, from two histograms over public grids of time and risk.

Used by COX (at the fitted coefficients) and VALIDATE COX (at the analyst's coefficients).

Definition (Harrell, Califf, Pryor, Lee and Rosati 1982, "Evaluating the yield of medical
tests", JAMA 247:2543-2546), exactly as lifelines' ``concordance_index(T, -partial_hazard, E)``
counts (``lifelines.utils.concordance._concordance_summary_statistics``): a pair (i, j) is
*comparable* when i had the event at T_i and either T_j > T_i, or T_j = T_i and j is censored
(a censoring at an event's time counts as later; two events at one time are not comparable;
a censored row is never the earlier one). It is *concordant* when the earlier one has the
higher risk, r_i > r_j (r = x'b, the linear predictor), and counts 1/2 when r_i = r_j.
C = (concordant + ties / 2) / comparable.

On shares. Each site puts its rows into the cells of two public grids: the time bins of the
model (the times rounded down to the time grid; with strata, one run of bins per stratum) and
R risk bins (r rounded down to a public grid, clamped to its ends): two histograms, its events
E[t, r] and its rows N[t, r]. Only their sums over the sites are shared
(:func:`site_agent.models.statement.site_sum`: one vector sent per member). Pooled, with
later[t, r] = N[t' > t, r] + (N - E)[t, r] (the rows that are later than an event at t: a
suffix sum over time, within a stratum) and X[t, r] = 2 later[t, r' < r] + later[t, r] (a
prefix sum over risk), both linear and so local:

    2 concordant + ties = sum_{t, r} E[t, r] X[t, r]
    comparable          = sum_{t, r} E[t, r] sum_r' later[t, r']

two inner products of the grid's length: one matrix product, i.e. one reshare of two words per
group, whatever the grid. Then C = (2 concordant + ties) / (2 comparable) as a canonical float
(:func:`site_agent.query.numeric.divide_float`, relative error 7.5e-9; 0 when no pair is
comparable, where lifelines raises).

Binning. Two rows in different risk bins are ordered as their r are; two rows in one bin count
as tied. So C is lifelines' exactly when no two distinct r of a comparable pair share a bin
(distinct predictors at least one bin width apart), and otherwise differs from it by at most
half the share of comparable pairs whose r differ by less than the bin width (and of pairs
among clamped rows). Times are those of the model's time grid (exact for times on it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.fixed import encode_int
from ..mpc.party import Party, Protocol
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..query.failsafe import failure_word
from ..query.numeric import Float, divide_float

CELLS = 2**21
"""The histograms' size: time bins x risk bins at most about this many (per group)."""
MIN_RISK_BINS, MAX_RISK_BINS = 16, 4096
RISK_LO, RISK_STEP = "__risk_lo__", "__risk_step__"
"""Placeholders of the risk grid in the local SQL (known only once the coefficients are)."""


def risk_bins(time_cells: int) -> int:
    """The public number of risk bins for ``time_cells`` time cells: as many as keep the grid
    within :data:`CELLS`, between :data:`MIN_RISK_BINS` and :data:`MAX_RISK_BINS`."""
    return max(MIN_RISK_BINS, min(MAX_RISK_BINS, CELLS // max(time_cells, 1)))


def risk_grid(lo: float, hi: float, bins: int) -> tuple[float, float]:
    """(lowest edge, bin width) of ``bins`` equal risk bins over [lo, hi] (public bounds of r)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return lo if math.isfinite(lo) else 0.0, 1.0  # one value of r: every row in the first bin
    return lo, (hi - lo) / bins


def risk_bin_sql(eta: str, bins: int) -> str:
    """The risk bin of a row whose linear predictor is the SQL ``eta``, on the grid placeholders
    :data:`RISK_LO` and :data:`RISK_STEP` (filled by :func:`fill_grid`), clamped to [0, bins)."""
    return f"CAST(LEAST(GREATEST(FLOOR(({eta} - {RISK_LO}) / {RISK_STEP}), 0), {bins - 1}) AS BIGINT)"


def fill_grid(sql: str, lo: float, step: float) -> str:
    """The local SQL with the risk grid's public numbers in place of the placeholders."""
    return sql.replace(RISK_LO, f"CAST('{lo!r}' AS DOUBLE)").replace(RISK_STEP, f"CAST('{step!r}' AS DOUBLE)")


def histograms(rows: dict[str, Any], shape: tuple[int, int, int]) -> U64:
    """A site's input: a zero failure word, then its events and its rows per (group, time cell,
    risk bin) as integers, from the result of the local SQL (columns ``gi`` (optional: one
    group), ``cell``, ``rbin``, ``events``, ``n``). Raises on a cell outside ``shape``."""
    groups, cells, bins = shape
    cell = np.asarray(rows["cell"], dtype=np.int64)
    rbin = np.asarray(rows["rbin"], dtype=np.int64)
    gi = np.asarray(rows["gi"], dtype=np.int64) if "gi" in rows else np.zeros_like(cell)
    for index, size in ((gi, groups), (cell, cells), (rbin, bins)):
        if index.size and (index.min() < 0 or index.max() >= size):
            raise ValueError("a row outside the grids")
    hist = np.zeros((2, groups, cells, bins), dtype=np.int64)
    hist[0, gi, cell, rbin] = np.rint(np.asarray(rows["events"], dtype=np.float64)).astype(np.int64)
    hist[1, gi, cell, rbin] = np.rint(np.asarray(rows["n"], dtype=np.float64)).astype(np.int64)
    return np.concatenate([encode_int([0]), encode_int(hist.ravel())]).astype(np.uint64)


def input_size(shape: tuple[int, int, int]) -> int:
    """Words of a site's input for histograms of ``shape`` (groups, time cells, risk bins)."""
    return 1 + 2 * math.prod(shape)


def failed_input(shape: tuple[int, int, int]) -> U64:
    """A failing site's input: zeros and a secret failure word."""
    out = np.zeros(input_size(shape), dtype=np.uint64)
    out[0] = failure_word()
    return out


def concordance(p: Party, pooled: AShare, shape: tuple[int, int, int], strata: int = 1) -> Protocol[Float]:
    """C per group (canonical floats) from the pooled histograms (the sites' inputs summed,
    without the failure word): module docstring. ``strata`` runs of time cells each form their
    own risk sets (COX STRATA); pairs across strata are not comparable (lifelines' rule)."""
    groups, cells, bins = shape
    hist = pooled.reshape(2, groups, strata, cells // strata, bins)
    events, rows = hist[0], hist[1]
    later = np.cumsum(rows.v[:, :, :, ::-1], axis=3, dtype=np.uint64)[:, :, :, ::-1]  # N[t' >= t]
    later -= events.v  # N[t' > t] + N[t] - E[t]
    both = np.empty((*later.shape, 2), dtype=np.uint64)  # in place: the grid is large
    x, total = both[..., 0], both[..., 1]
    np.cumsum(later, axis=4, dtype=np.uint64, out=x)  # later[r' <= r]
    total[...] = x[..., -1:]
    x *= np.uint64(2)
    x -= later  # 2 later[r' < r] + later[r]
    size = cells * bins
    lhs = AShare(events.v.reshape(2, groups, 1, size))
    sums = (yield from ar.matmul(p, lhs, AShare(both.reshape(2, groups, size, 2)))).reshape(groups, 2)
    twice, pairs = sums[:, 0], sums[:, 1]
    ones = ar.constant(p, np.ones(groups, dtype=np.uint64), AShare)
    none = yield from bo.lt(p, pairs, ones)  # no comparable pair: divide 0 by 1
    return (yield from divide_float(p, twice, pairs.lshift(1) + none, np.zeros(groups, dtype=np.int64)))
