"""Quantiles released on shares under the threshold rule: every released value is shared by k persons.

A type-7 quantile (Hyndman and Fan 1996, numpy's ``linear``) of N values x_(0) <= ... <= x_(N-1)
is x_(floor h) + (h - floor h) (x_(ceil h) - x_(floor h)) with h = (N - 1) q. On the column's
public grid (lo, hi, step) each x_(j) is the grid value of the bin that holds it, so a quantile
of a small group is a patient's value (the median of one, the five quantiles 0.1 ... 0.9 of
five). Statistical disclosure control treats such a value like a table cell: the threshold rule
asks that at least k units contribute to it (Hundepool et al., *Statistical Disclosure Control*,
Wiley 2012, sections 4.2 and 5.2; the Eurostat/SDAP *Handbook on Statistical Disclosure Control
for Outputs*, 2019, on percentiles: a percentile must not be the value of an identifiable unit;
the ABS DataLab output rules, "minimum contributors for quantiles"); DataSHIELD releases
quantiles only of groups above its subset filter and never the extremes (``ds.quantileMean``).

The rule here, applied per output cell on shares:

* **Levels.** Coarsening factors f in 1, 2, 5, 10, 20, 50, ... up to the number of grid bins.
  Level f groups f adjacent grid bins into one coarse bin (the last one may be shorter); its
  value is the coarse bin's centre lo + step (j f + (f - 1) / 2), clamped into [lo, hi]. Level 1
  is the grid itself.
* **Per level** the type-7 quantile of the coarse histogram, and the persons in the two coarse
  bins it reads: the bins holding x_(floor h) and x_(ceil h) (the same bin when h is whole, so
  q = 1 or a whole h reads one bin). The level is *ok* when both hold at least k persons.
* **Release** the quantile of the finest ok level. When no level is ok the cell's quantile is
  *bad* and must be suppressed (see :func:`released_quantiles`).

A released value therefore says "the persons ranked floor h and ceil h lie in these coarse
bins, each of which holds at least k persons" and nothing finer. The bins count histogram rows,
so they count persons when each person has one row in the query's rows. What it does not stop (several quantiles
of one cell read at different levels, and queries differenced against each other) is written
down in docs/privacy-quantiles.md.

:func:`released_quantiles` is the vectorized protocol (all items, cells and levels in one batch;
its rounds depend on neither the data nor the number of cells). :func:`reference_quantiles` is
the same rule in plain numpy on a histogram in the clear, for tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..mpc import arithmetic as ar
from ..mpc.boolean import lt, ltz
from ..mpc.fixed import FixedPoint
from ..mpc.party import Party, Protocol
from ..mpc.ring import ALL_ONES
from ..mpc.shares import AShare

Grid = tuple[float, float, float]


@dataclass(frozen=True)
class QuantileSpec:
    """One quantile output: q = qn / qd on the grid (lo, hi, step)."""

    qn: int
    qd: int
    grid: Grid


def grid_bins(grid: Grid) -> int:
    """Bins of the public grid (lo, hi, step): bin i holds values that round to lo + i step."""
    lo, hi, step = grid
    return round((hi - lo) / step) + 1


def levels(bins: int) -> list[int]:
    """Coarsening factors 1, 2, 5, 10, 20, 50, ... up to ``bins`` (at least [1])."""
    out, scale = [1], 1
    while True:
        for m in (2, 5, 10):
            if m * scale > bins:
                return out
            out.append(m * scale)
        scale *= 10


def coarse_values(grid: Grid, f: int) -> np.ndarray:
    """Values of level ``f``'s coarse bins: their centres, clamped into [lo, hi]."""
    lo, hi, step = grid
    nb = -(-grid_bins(grid) // f)
    centres = lo + step * (np.arange(nb) * f + (f - 1) / 2)
    return np.asarray(np.clip(centres, lo, hi), dtype=np.float64)


# -- the plain reference ------------------------------------------------------------------


def reference_quantiles(hist: np.ndarray, spec: QuantileSpec, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The rule in the clear: (released values, bad) per row of ``hist`` (rows, bins) of counts.

    A row without values is bad with a NaN value.
    """
    rows, bins = hist.shape
    q = Fraction(spec.qn, spec.qd)
    values = np.full(rows, np.nan)
    bad = np.ones(rows, dtype=bool)
    for r in range(rows):
        n = int(hist[r].sum())
        if n == 0:
            continue
        h = (n - 1) * q
        below, above = math.floor(h), math.ceil(h)
        for f in levels(bins):
            counts = np.add.reduceat(hist[r], np.arange(0, bins, f))
            cum = np.cumsum(counts)
            a, b = np.searchsorted(cum, [below, above], side="right")  # bins of x_(below), x_(above)
            if counts[a] >= k and counts[b] >= k:
                centre = coarse_values(spec.grid, f)
                values[r] = centre[a] + float(h - below) * (centre[b] - centre[a])
                bad[r] = False
                break
    return values, bad


# -- the protocol -------------------------------------------------------------------------


def _starts(lens: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)


@dataclass(frozen=True)
class _Layout:
    """Public layout of one batch.

    *Rows* are (item, cell) pairs, each with its item's fine grid bins, end to end in one flat
    array (item-major). *Segments* are (item, cell, level) triples, each with that level's
    coarse bins, end to end in a second flat array (item, cell, level, bin), so every level
    costs only its own coarse bins. A coarse bin ends at a fine bin, and its cumulative count is
    that fine bin's: ``pick`` names the fine element each coarse element ends at.
    """

    fine_lens: np.ndarray  # fine bins per row
    fine_starts: np.ndarray
    qn: np.ndarray  # per row
    qd: np.ndarray
    lens: np.ndarray  # coarse bins per segment
    starts: np.ndarray
    row_of: np.ndarray  # per segment: its row
    pick: np.ndarray  # per coarse element: the fine element it ends at
    values: np.ndarray  # per coarse element: the coarse bin's value, fixed point (int64)
    gather: np.ndarray  # (rows, most levels): segment of each level, -1 past the row's last
    span: float  # widest hi - lo

    @staticmethod
    def of(specs: Sequence[QuantileSpec], cells: int, fp: FixedPoint) -> _Layout:
        """The layout of ``cells`` cells of each item (whole arrays: no loop over cells)."""
        fine_lens, qn, qd, lens, row_of, pick, values, gather = [], [], [], [], [], [], [], []
        most = max(len(levels(grid_bins(s.grid))) for s in specs)
        row = seg = fine = 0
        for s in specs:
            bins = grid_bins(s.grid)
            fs = levels(bins)
            ends = [np.minimum(np.arange(1, -(-bins // f) + 1) * f, bins) - 1 for f in fs]
            on_row = np.arange(cells)
            fine_lens.append(np.full(cells, bins))
            qn.append(np.full(cells, s.qn))
            qd.append(np.full(cells, s.qd))
            lens.append(np.tile([len(e) for e in ends], cells))
            row_of.append(np.repeat(row + on_row, len(fs)))
            pick.append((fine + on_row[:, None] * bins + np.concatenate(ends)[None, :]).ravel())
            values.append(np.tile(np.concatenate([coarse_values(s.grid, f) for f in fs]), cells))
            own = seg + on_row[:, None] * len(fs) + np.arange(len(fs))[None, :]
            gather.append(np.pad(own, ((0, 0), (0, most - len(fs))), constant_values=-1))
            row, seg, fine = row + cells, seg + cells * len(fs), fine + cells * bins
        fine_a, lens_a = np.concatenate(fine_lens).astype(np.int64), np.concatenate(lens).astype(np.int64)
        return _Layout(
            fine_lens=fine_a,
            fine_starts=_starts(fine_a),
            qn=np.concatenate(qn).astype(np.int64),
            qd=np.concatenate(qd).astype(np.int64),
            lens=lens_a,
            starts=_starts(lens_a),
            row_of=np.concatenate(row_of),
            pick=np.concatenate(pick),
            values=fp.encode(np.concatenate(values)).view(np.int64),
            gather=np.concatenate(gather).astype(np.int64),
            span=max(s.grid[1] - s.grid[0] for s in specs),
        )


def _segment_sum(x: AShare, starts: np.ndarray) -> AShare:
    return AShare(np.add.reduceat(x.v, starts, axis=-1, dtype=np.uint64))


def _segment_cumsum(x: AShare, lens: np.ndarray, starts: np.ndarray) -> AShare:
    c = np.cumsum(x.v, axis=-1, dtype=np.uint64)
    before = np.concatenate([np.zeros_like(c[:, :1]), c[:, :-1]], axis=1)[:, starts]
    return AShare(c - np.repeat(before, lens, axis=-1))


def _shift_in_segments(x: AShare, starts: np.ndarray) -> AShare:
    """Each element's predecessor in its segment (0 at a segment's first element)."""
    prev = np.concatenate([np.zeros_like(x.v[:, :1]), x.v[:, :-1]], axis=1)
    prev[:, starts] = 0
    return AShare(prev)


def _ones(p: Party, shape: tuple[int, ...]) -> AShare:
    return ar.constant(p, np.ones(shape, dtype=np.uint64), AShare)


def _prefix_product(p: Party, x: AShare) -> Protocol[AShare]:
    """Inclusive prefix products along axis 1 (Hillis and Steele 1986): ceil(log2 L) rounds."""
    d = 1
    while d < x.shape[1]:
        prod = yield from ar.mul(p, x[:, d:], x[:, :-d])
        x = AShare.concat([x[:, :d], prod], axis=1)
        d *= 2
    return x


def _by_level(x: AShare, gather: np.ndarray) -> AShare:
    """Per-segment values as (rows, levels), 0 past a row's last level."""
    padded = np.concatenate([x.v, np.zeros_like(x.v[:, :1])], axis=1)
    return AShare(padded[:, np.where(gather < 0, x.shape[0], gather)])


def released_quantiles(
    p: Party, hists: Sequence[AShare], specs: Sequence[QuantileSpec], k: int, fp: FixedPoint
) -> Protocol[tuple[list[AShare], list[AShare]]]:
    """Coarsened type-7 quantiles of every item's pooled histograms, and their *bad* flags.

    ``hists[i]`` holds item i's shared counts per (output cell, grid bin); every item has the
    same cells. Returns, per item and cell, the released value (fixed point, ``fp``'s bits) and
    ``bad``: 1 when no level has both bins the quantile reads holding at least ``k`` persons,
    0 otherwise. A bad cell's value must not be released: its quantile is to be suppressed like
    a cell below the minimum size (the value is then meaningless). A cell with no values has a
    meaningless value and bad flag; its count suppresses it.

    The crossings of h and ceil h are found once, on the fine grid (one comparison per fine
    bin, as without coarsening); a coarse bin's crossing is read at the fine bin it ends at.
    Rounds: those comparisons (7), values and counts at the crossings (1), the threshold
    comparisons (7), the interpolation and both bins' verdict (1), truncation (2), the prefix
    over levels (ceil log2 levels), the selection (1): 23 for a grid of 1,000 to 9,999 bins.
    """
    cells = hists[0].shape[0]
    lay = _Layout.of(specs, cells, fp)
    fine = AShare.concat([h.reshape(-1) for h in hists])
    size, segs = lay.pick.shape[0], lay.lens.shape[0]
    fine_cum = _segment_cumsum(fine, lay.fine_lens, lay.fine_starts)
    n = _segment_sum(fine, lay.fine_starts)
    t = ar.add_public(p, n, np.asarray(ALL_ONES)).mul_public(lay.qn)  # (N - 1) q D = h D per row
    t_el = AShare(np.repeat(t.v, lay.fine_lens, axis=-1))
    # x_(floor h) lies in the first bin with cum D > h D, x_(ceil h) in the first with cum D > h D + D - 1
    lhs = AShare.concat([t_el, ar.add_public(p, t_el, np.repeat(lay.qd - 1, lay.fine_lens).view(np.uint64))])
    scaled = fine_cum.mul_public(np.repeat(lay.qd, lay.fine_lens))
    fine_above = yield from lt(p, lhs, AShare.concat([scaled, scaled]))
    above = AShare.concat([fine_above[: fine.shape[0]][lay.pick], fine_above[fine.shape[0] :][lay.pick]])
    cum = fine_cum[lay.pick]
    hist = cum - _shift_in_segments(cum, lay.starts)
    both_starts = np.concatenate([lay.starts, lay.starts + size])
    first = above - _shift_in_segments(above, both_starts)  # one-hot of each first crossing
    x = _segment_sum(first.mul_public(np.concatenate([lay.values, lay.values])), both_starts)
    x_lo, x_hi = x[:segs], x[segs:]
    first_lo, first_hi = first[:size], first[size:]
    at = yield from ar.mul(p, AShare.concat([first_lo, first_lo, first_hi]), AShare.concat([cum, hist, hist]))
    sums = _segment_sum(at, np.concatenate([lay.starts, lay.starts + size, lay.starts + 2 * size]))
    c, persons = sums[:segs], sums[segs:]
    qd = lay.qd[lay.row_of]
    frac = t[lay.row_of] - c.mul_public(qd) + ar.constant(p, qd.view(np.uint64), AShare)  # (h - floor h) D
    few = yield from ltz(p, ar.add_public(p, persons, np.asarray(-k, dtype=np.int64).view(np.uint64)))
    enough = _ones(p, few.shape) - few
    prods = yield from ar.mul(p, AShare.concat([frac, enough[:segs]]), AShare.concat([x_hi - x_lo, enough[segs:]]))
    part, ok = prods[:segs], prods[segs:]
    shift = max(1, 61 - math.ceil(math.log2(lay.span * fp.scale + 1)))
    inv = np.array([round(2**shift / d) for d in qd], dtype=np.int64)
    interp = yield from ar.trunc(p, part.mul_public(inv), shift)
    value = x_lo + interp
    keep = _by_level(ok, lay.gather)
    none_yet = yield from _prefix_product(p, _ones(p, keep.shape) - keep)  # no ok level up to this one
    before = AShare.concat([_ones(p, (keep.shape[0], 1)), none_yet[:, :-1]], axis=1)
    chosen = yield from ar.mul(p, before - none_yet, _by_level(value, lay.gather))  # the first ok level's value
    released, bad = chosen.sum(axis=1), none_yet[:, -1]
    cut = [slice(i * cells, (i + 1) * cells) for i in range(len(specs))]
    return [released[s] for s in cut], [bad[s] for s in cut]
