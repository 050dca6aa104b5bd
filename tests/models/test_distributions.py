"""Student's t tails and quantiles against SciPy (an independent implementation)."""

from __future__ import annotations

import pytest
from scipy import stats

from site_agent.models.distributions import t_quantile, t_two_sided


@pytest.mark.parametrize("df", [1, 3, 12, 28, 166, 10_000])
@pytest.mark.parametrize("t", [0.0, 0.3, 1.96, 2.7, 8.0, 40.0])
def test_two_sided_tail(t: float, df: int) -> None:
    assert t_two_sided(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("df", [1, 3, 12, 28, 166, 10_000])
def test_quantile(df: int) -> None:
    assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-10)
