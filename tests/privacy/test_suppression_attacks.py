"""Secondary suppression against real agents (issue family 3): empty cells give no protection.

The lung consortium of the privacy tests (three agent processes, mutual TLS, DuckDB), the
analyst's queries through the notebook client; each attack is written as the analyst's own
arithmetic on the released values and compared with the pooled truth from pandas.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from ..integration.conftest import Running
from .conftest import K, forget

SUPPRESSED = f"<{K}"


@pytest.fixture(autouse=True)
def fresh(lung: Running) -> Iterator[None]:
    forget(lung)  # what other tests released does not change these answers
    yield


def _left_over(out: pd.DataFrame, column: str) -> float:
    """The attacker's step: the margin minus every released cell of its line."""
    cells = out[column].drop("(all)")
    return float(out.loc["(all)", column]) - sum(float(v) for v in cells if v != SUPPRESSED and not pd.isna(v))


def test_empty_cell_does_not_isolate_the_target(lung: Running) -> None:
    out = lung.client.query(
        "SELECT CASE WHEN age = 74 AND sex = 1 AND inst = 12 THEN 'target' WHEN age < 0 THEN 'never' "
        "ELSE 'rest' END AS g, COUNT(*) AS n, SUM(time) AS t FROM lung GROUP BY ROLLUP(g)"
    ).set_index("g")
    p = lung.pooled
    target = p[(p.age == 74) & (p.sex == 1) & (p.inst == 12)]
    assert len(target) == 1
    assert _left_over(out, "n") != 1  # the attacker's count of the target's cell
    assert _left_over(out, "t") != float(target.time.iloc[0])  # and its sum of time
    assert out.loc["never", "n"] == 0 and pd.isna(out.loc["never", "t"])
    assert out.loc["target", "n"] == SUPPRESSED and out.loc["rest", "n"] == SUPPRESSED
    assert out.loc["(all)", "n"] == len(p) and out.loc["(all)", "t"] == pytest.approx(p.time.sum())


def test_ecog_bins_with_an_empty_bin_do_not_leak_the_one_ecog_3_patient(lung: Running) -> None:
    bins = " ".join(f"WHEN ph_ecog = {v} THEN '{v}'" for v in range(4))
    out = lung.client.query(
        f"SELECT CASE {bins} ELSE '4' END AS ecog, COUNT(*) AS n, SUM(time) AS t, AVG(age) AS mean_age "
        "FROM lung WHERE ph_ecog IS NOT NULL GROUP BY ROLLUP(ecog)"
    ).set_index("ecog")
    p = lung.pooled.dropna(subset=["ph_ecog"])
    three = p[p.ph_ecog == 3]
    assert len(three) == 1 and not (p.ph_ecog == 4).any()
    assert _left_over(out, "n") != 1
    assert _left_over(out, "t") != float(three.time.iloc[0])
    assert out.loc["4", "n"] == 0 and pd.isna(out.loc["4", "mean_age"])
    for v in (0, 1):  # the large bins still answer, exactly
        grp = p[p.ph_ecog == v]
        assert out.loc[str(v), "n"] == len(grp)
        assert out.loc[str(v), "mean_age"] == pytest.approx(grp.age.mean(), rel=1e-6)
