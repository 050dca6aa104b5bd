"""Checks of a released KAPLAN_MEIER result against lifelines on the pooled rows.

Everything here is computed by lifelines and pandas from the pooled plaintext, never by our code:
the curve and its interval at each released time (lifelines' value at the last time at or before
it), the persons at risk, events and censorings of each released step counted with pandas, the
log-rank test by ``multivariate_logrank_test``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from site_agent.models.kaplan_meier import KaplanMeier

CURVE_TOL = 1e-7  # the curve: 30-bit fixed point, errors of 2^-30 per event bin
CI_TOL = 5e-6  # log(-log S) amplifies the curve's error near S = 1 (1.9e-6 seen on GBSG2)
LOGRANK_TOL = 1e-6


def at_or_before(frame: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """lifelines' step function ``frame`` (indexed by its timeline) at ``times``."""
    idx = np.searchsorted(frame.index.to_numpy(), times, side="right") - 1
    return frame.to_numpy()[idx]


def check_group(result: pd.DataFrame, rows: pd.DataFrame, event: pd.Series, k: int, **group: Any) -> KaplanMeier:
    """The released curve of one group against lifelines fitted on its pooled ``rows``, and the
    release rule on each released step (events and censorings 0 or >= k, at risk >= k)."""
    ours = KaplanMeier(result, **group)
    fitter = KaplanMeierFitter().fit(rows["time"], event)
    table = ours.event_table
    times = table.index.to_numpy()
    assert len(times) > 0
    survival = ours.survival_function_.iloc[1:, 0].to_numpy()
    np.testing.assert_allclose(survival, at_or_before(fitter.survival_function_, times)[:, 0], atol=CURVE_TOL)
    np.testing.assert_allclose(
        ours.confidence_interval_.iloc[1:].to_numpy(), at_or_before(fitter.confidence_interval_, times), atol=CI_TOL
    )
    previous = np.concatenate([[-np.inf], times[:-1]])
    t = rows["time"].to_numpy()
    e = event.to_numpy().astype(bool)
    inside = (t[None, :] > previous[:, None]) & (t[None, :] <= times[:, None])
    np.testing.assert_array_equal(table["at_risk"], (t[None, :] > previous[:, None]).sum(axis=1))
    np.testing.assert_array_equal(table["observed"], (inside & e).sum(axis=1))
    np.testing.assert_array_equal(table["censored"], (inside & ~e).sum(axis=1))
    for column in ("observed", "censored"):
        assert ((table[column] == 0) | (table[column] >= k)).all(), column
    assert (table["at_risk"] >= k).all()
    return ours


def check_logrank(result: pd.DataFrame, rows: pd.DataFrame, event: pd.Series, groups: pd.Series) -> None:
    """The released log-rank test against lifelines' multivariate test on the same rows."""
    test = result.attrs["logrank"]
    ref = multivariate_logrank_test(rows["time"], groups, event)
    assert abs(test["test_statistic"] - ref.test_statistic) < LOGRANK_TOL
    assert abs(test["p_value"] - ref.p_value) < LOGRANK_TOL
    assert test["degrees_of_freedom"] == ref.degrees_of_freedom
