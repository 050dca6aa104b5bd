"""Epidemiological queries the release rule must keep answering, against three real agents.

Every released number equals pandas (or statsmodels) on the pooled rows; every cell the rule
has no reason to withhold is released. Each test starts the ledger afresh, so what other tests
released does not change what these answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from ..integration.conftest import Running
from ..query.quantile_reference import coarsened_type7
from .conftest import K, forget


@pytest.fixture(autouse=True)
def fresh(gbsg2: Running, lung: Running) -> Iterator[None]:
    forget(gbsg2)
    forget(lung)
    yield


def _rows(out: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return out.set_index(keys)


def test_counts_means_and_sds_by_group_equal_pandas(gbsg2: Running) -> None:
    out = gbsg2.client.query(
        "SELECT horTh, COUNT(*) AS n, AVG(age) AS mean_age, STDDEV(tsize) AS sd_tsize, VARIANCE(pnodes) AS var_nodes "
        "FROM gbsg2 GROUP BY horTh"
    )
    assert list(out.columns[:2]) == ["horTh", "n"]  # names as written
    ref = gbsg2.pooled.groupby("horTh")
    got = _rows(out, ["horTh"])
    for key, grp in ref:
        assert got.loc[key, "n"] == len(grp)
        assert got.loc[key, "mean_age"] == pytest.approx(grp.age.mean(), rel=1e-6)
        assert got.loc[key, "sd_tsize"] == pytest.approx(grp.tsize.std(), rel=1e-6)
        assert got.loc[key, "var_nodes"] == pytest.approx(grp.pnodes.var(), rel=1e-6)


def test_two_keys_release_every_large_cell(gbsg2: Running) -> None:
    out = gbsg2.client.query(
        "SELECT tgrade, menostat, COUNT(*) AS n, AVG(pnodes) AS nodes FROM gbsg2 GROUP BY tgrade, menostat"
    )
    got = _rows(out, ["tgrade", "menostat"])
    for (grade, meno), grp in gbsg2.pooled.groupby(["tgrade", "menostat"]):
        assert len(grp) >= K
        assert got.loc[(grade, meno), "n"] == len(grp)
        assert got.loc[(grade, meno), "nodes"] == pytest.approx(grp.pnodes.mean(), rel=1e-6)


def test_proportions_with_wilson_limits_equal_statsmodels(gbsg2: Running) -> None:
    out = gbsg2.client.query("SELECT horTh, PROPORTION(cens = 1) AS events FROM gbsg2 GROUP BY horTh")
    got = _rows(out, ["horTh"])
    for key, grp in gbsg2.pooled.groupby("horTh"):
        events = int((grp.cens == 1).sum())
        low, high = proportion_confint(events, len(grp), method="wilson")
        assert got.loc[key, "events"] == pytest.approx(events / len(grp), rel=1e-6)
        assert [got.loc[key, "events_ci_low"], got.loc[key, "events_ci_high"]] == pytest.approx([low, high], abs=1e-6)


def test_case_bins_and_conditional_aggregates(gbsg2: Running) -> None:
    out = gbsg2.client.query(
        "SELECT CASE WHEN age < 45 THEN 'young' WHEN age < 60 THEN 'middle' ELSE 'older' END AS band, "
        "COUNT(*) AS n, AVG(time) AS mean_time, SUM(CASE WHEN tgrade = 'III' THEN 1 ELSE 0 END) AS grade3, "
        "AVG(CASE WHEN horTh = 'yes' THEN tsize END) AS tsize_treated FROM gbsg2 GROUP BY band"
    )
    pooled = gbsg2.pooled
    band = np.where(pooled.age < 45, "young", np.where(pooled.age < 60, "middle", "older"))
    got = _rows(out, ["band"])
    for key, grp in pooled.groupby(band):
        assert got.loc[key, "n"] == len(grp)
        assert got.loc[key, "mean_time"] == pytest.approx(grp.time.mean(), rel=1e-6)
        assert got.loc[key, "grade3"] == pytest.approx((grp.tgrade == "III").sum())
        treated = grp[grp.horTh == "yes"]
        assert got.loc[key, "tsize_treated"] == pytest.approx(treated.tsize.mean(), rel=1e-6)


def test_rollup_margins_equal_pandas(gbsg2: Running) -> None:
    out = gbsg2.client.query("SELECT horTh, tgrade, COUNT(*) AS n FROM gbsg2 GROUP BY ROLLUP(horTh, tgrade)")
    pooled = gbsg2.pooled
    assert out[(out.horTh == "(all)") & (out.tgrade == "(all)")].n.item() == len(pooled)
    for key, grp in pooled.groupby("horTh"):
        assert out[(out.horTh == key) & (out.tgrade == "(all)")].n.item() == len(grp)
    for (treated, grade), grp in pooled.groupby(["horTh", "tgrade"]):
        assert out[(out.horTh == treated) & (out.tgrade == grade)].n.item() == len(grp)


def test_medians_by_group_equal_the_coarsened_pandas_reference(gbsg2: Running) -> None:
    out = gbsg2.client.query(
        "SELECT menostat, MEDIAN(age) AS med_age, QUANTILE_CONT(time, 0.25) AS q1 FROM gbsg2 GROUP BY menostat"
    )
    got = _rows(out, ["menostat"])
    for key, grp in gbsg2.pooled.groupby("menostat"):
        for col, column, q, grid in (("med_age", "age", 0.5, (20, 90, 1)), ("q1", "time", 0.25, (0, 2700, 1))):
            ref = coarsened_type7(grp[column], q, grid, K)
            assert ref is not None and got.loc[key, col] == pytest.approx(ref.value, abs=2**-15)
    # where the grid bins around it hold k persons, the median is the plain type-7 median
    big = gbsg2.pooled.groupby("menostat").age
    assert any(got.loc[key, "med_age"] == ages.median() for key, ages in big)


def test_lung_means_next_to_counts_with_missing_values(lung: Running) -> None:
    out = lung.client.query(
        "SELECT sex, COUNT(*) AS n, AVG(ph_karno) AS karno, AVG(wt_loss) AS weight_loss, COUNT(meal_cal) AS with_meal "
        "FROM lung GROUP BY sex"
    )
    got = _rows(out, ["sex"])
    for key, grp in lung.pooled.groupby("sex"):
        assert got.loc[key, "n"] == len(grp)
        assert got.loc[key, "karno"] == pytest.approx(grp.ph_karno.mean(), rel=1e-6)
        assert got.loc[key, "weight_loss"] == pytest.approx(grp.wt_loss.mean(), rel=1e-6)
        assert got.loc[key, "with_meal"] == grp.meal_cal.notna().sum()


def test_a_join_along_persons_equals_pandas(lung: Running) -> None:
    out = lung.client.query(
        "SELECT a.sex, COUNT(*) AS n, AVG(b.time) AS t FROM lung a JOIN lung b ON a.id = b.id GROUP BY a.sex"
    )
    got = _rows(out, ["sex"])
    for key, grp in lung.pooled.groupby("sex"):
        assert got.loc[key, "n"] == len(grp)
        assert got.loc[key, "t"] == pytest.approx(grp.time.mean(), rel=1e-6)
