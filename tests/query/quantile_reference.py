"""The documented release rule for quantiles, computed from the pooled rows with pandas and numpy.

Independent of the protocol and of ``site_agent.query.quantiles``: values are rounded to the
grid, grouped f fine bins at a time, and numpy's type-7 quantile is taken of the coarse bins'
centres; the finest level whose bins read by the quantile each hold at least k rows wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVELS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass(frozen=True)
class Coarsened:
    value: float  # what may be released
    level: int  # fine bins per coarse bin
    persons: tuple[int, ...]  # rows in each coarse bin the quantile reads


def coarsened_type7(values: pd.Series, q: float, grid: tuple[float, float, float], k: int) -> Coarsened | None:
    """The released quantile of ``values`` (None: no level has k rows in the bins it reads)."""
    lo, hi, step = grid
    bins = round((hi - lo) / step) + 1
    x = values.dropna()
    fine = np.floor((x.clip(lo, hi) - lo) / step + 0.5).astype(int)
    for f in (f for f in LEVELS if f <= bins):
        coarse = fine // f
        centres = np.clip(lo + step * (coarse * f + (f - 1) / 2), lo, hi)
        ordered = np.sort(coarse.to_numpy())
        h = (len(ordered) - 1) * q
        read = sorted({int(ordered[int(np.floor(h))]), int(ordered[int(np.ceil(h))])})
        persons = tuple(int(n) for n in coarse.value_counts()[read])
        if min(persons) >= k:
            return Coarsened(float(np.quantile(centres, q, method="linear")), f, persons)
    return None
