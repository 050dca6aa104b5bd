"""Pooled statistics equal the plaintext reference on the pooled data (pandas, numpy, statsmodels)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.rates import confint_poisson

from .conftest import Consortium, K
from .quantile_reference import coarsened_type7

ALPHA = 0.05  # the planner's default: 95% intervals


def _released(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Rows of an MPC result with every value released, indexed by the keys."""
    mask = pd.DataFrame(frame.attrs["suppressed"]).any(axis=1).to_numpy()
    return frame[~mask].set_index(key)


def test_count_star_by_two_keys_equals_pandas(lung: Consortium) -> None:
    out = lung.query("SELECT sex, status, COUNT(*) AS n FROM lung GROUP BY sex, status")
    ref = lung.pooled["lung"].groupby(["sex", "status"]).size()
    got = _released(out, ["sex", "status"])["n"]
    assert len(got) == len(ref) == 4
    for idx, n in ref.items():
        assert got[idx] == n


def test_count_without_group_by(lung: Consortium) -> None:
    out = lung.query("SELECT COUNT(*) AS n, COUNT(meal_cal) AS with_meal FROM lung")
    assert out["n"].tolist() == [len(lung.pooled["lung"])]
    assert out["with_meal"].tolist() == [int(lung.pooled["lung"].meal_cal.notna().sum())]


@pytest.mark.parametrize("column", ["age", "meal_cal", "wt_loss", "time"])
def test_avg_and_stddev_within_1e6_relative(lung: Consortium, column: str) -> None:
    out = lung.query(
        f"SELECT sex, AVG({column}) AS mean, STDDEV({column}) AS sd, VARIANCE({column}) AS var, "
        f"STDDEV_POP({column}) AS sdp FROM lung GROUP BY sex"
    )
    got = _released(out, ["sex"])
    g = lung.pooled["lung"].groupby("sex")[column]
    for sex in (1, 2):
        np.testing.assert_allclose(got.loc[sex, "mean"], g.mean()[sex], rtol=1e-6)
        np.testing.assert_allclose(got.loc[sex, "sd"], g.std()[sex], rtol=1e-6)
        np.testing.assert_allclose(got.loc[sex, "var"], g.var()[sex], rtol=1e-6)
        np.testing.assert_allclose(got.loc[sex, "sdp"], g.std(ddof=0)[sex], rtol=1e-6)


def test_avg_stddev_generated_with_rollup(generated: Consortium) -> None:
    out = generated.query(
        "SELECT ward, sex, COUNT(*) n, AVG(sbp) m, STDDEV(sbp) s, SUM(bmi) total "
        "FROM patients GROUP BY ROLLUP(ward, sex)"
    )
    p = generated.pooled["patients"]
    by_cell = out.set_index(["ward", "sex"])
    ref = p.groupby(["ward", "sex"])
    opened = 0
    for (ward, sex), grp in ref:
        row = by_cell.loc[(ward, sex)]
        opened += 1
        assert row["n"] == len(grp)
        np.testing.assert_allclose(row["m"], grp.sbp.mean(), rtol=1e-6)
        np.testing.assert_allclose(row["s"], grp.sbp.std(), rtol=1e-6)
        np.testing.assert_allclose(row["total"], grp.bmi.sum(), rtol=1e-6)
    assert opened == len(ref)  # the empty (other) sex cell protects nothing and needs no partner
    total = by_cell.loc[("(all)", "(all)")]
    np.testing.assert_allclose(total["m"], p.sbp.mean(), rtol=1e-6)
    np.testing.assert_allclose(total["s"], p.sbp.std(), rtol=1e-6)
    margins = [(ward, grp) for ward, grp in p.groupby("ward") if by_cell.loc[(ward, "(all)"), "s"] != "<5"]
    assert len(margins) >= 1  # the empty (other) ward margin takes the two smallest ward margins with it
    for ward, grp in margins:
        np.testing.assert_allclose(by_cell.loc[(ward, "(all)"), "s"], grp.sbp.std(), rtol=1e-6)


@pytest.mark.parametrize("q", [0.5, 0.25, 0.75, 0.1, 0.9, 0.95])
def test_quantiles_equal_type7_on_pooled_data(lung: Consortium, q: float) -> None:
    """Type-7 on the grid, coarsened until K persons share the bins it reads (docs/privacy-quantiles.md)."""
    out = lung.query(
        f"SELECT sex, QUANTILE_CONT(age, {q}) AS qa, PERCENTILE_CONT({q}) WITHIN GROUP (ORDER BY time) AS qt, "
        "MEDIAN(meal_cal) AS mm FROM lung GROUP BY sex"
    )
    got = _released(out, ["sex"])
    for sex, grp in lung.pooled["lung"].groupby("sex"):
        for col, name, grid, quant in (
            ("qa", "age", (0, 120, 1), q),
            ("qt", "time", (0, 1100, 1), q),
            ("mm", "meal_cal", (0, 3000, 1), 0.5),
        ):
            ref = coarsened_type7(grp[name], quant, grid, K)
            assert ref is not None
            assert got.loc[sex, col] == pytest.approx(ref.value, abs=2**-15)


def test_quantile_at_the_finest_level_is_numpy_type7(lung: Consortium) -> None:
    """Where the bins read hold K persons, the grid itself answers: numpy's type-7 exactly."""
    out = lung.query("SELECT sex, MEDIAN(age) AS ma, QUANTILE_CONT(age, 0.75) AS qa FROM lung GROUP BY sex")
    got = _released(out, ["sex"])
    grp = lung.pooled["lung"].query("sex == 1").age
    assert got.loc[1, "ma"] == pytest.approx(np.quantile(grp, 0.5), abs=2**-15)
    assert got.loc[1, "qa"] == pytest.approx(np.quantile(grp, 0.75), abs=2**-15)


def test_median_of_continuous_values_on_grid(generated: Consortium) -> None:
    out = generated.query("SELECT sex, MEDIAN(bmi) AS med, QUANTILE_CONT(bmi, 0.9) AS p90 FROM patients GROUP BY sex")
    got = _released(out, ["sex"])
    for sex, grp in generated.pooled["patients"].groupby("sex"):
        for col, q in (("med", 0.5), ("p90", 0.9)):
            ref = coarsened_type7(grp.bmi, q, (10, 50, 0.01), K)
            assert ref is not None
            assert got.loc[sex, col] == pytest.approx(ref.value, abs=2**-14)


def test_proportion_and_wilson_interval_equal_statsmodels(lung: Consortium) -> None:
    out = lung.query("SELECT sex, PROPORTION(status = 1) AS died, AVG(ph_ecog >= 2) AS poor FROM lung GROUP BY sex")
    got = _released(out, ["sex"])
    for sex, grp in lung.pooled["lung"].groupby("sex"):
        x, n = int((grp.status == 1).sum()), len(grp)
        lo, hi = proportion_confint(x, n, alpha=0.05, method="wilson")
        assert got.loc[sex, "died"] == pytest.approx(x / n, rel=1e-7)
        assert got.loc[sex, "died_ci_low"] == pytest.approx(lo, abs=1e-6)
        assert got.loc[sex, "died_ci_high"] == pytest.approx(hi, abs=1e-6)
        ecog = grp.ph_ecog.dropna()
        assert got.loc[sex, "poor"] == pytest.approx((ecog >= 2).mean(), rel=1e-7)


def _byar_from_normal(events: int) -> tuple[float, float]:
    """Byar's approximation of the exact interval (Breslow and Day 1987, vol. II, p. 69),
    with the normal quantile from scipy: the Wilson-Hilferty cube-root transform of the
    exact interval's chi-square quantiles."""
    z = norm.ppf(1 - ALPHA / 2)
    e1 = events + 1
    lo = events * (1 - 1 / (9 * events) - z / (3 * np.sqrt(events))) ** 3 if events > 0 else 0.0
    return lo, e1 * (1 - 1 / (9 * e1) + z / (3 * np.sqrt(e1))) ** 3


# Byar approximates the exact interval: for 10 or more events its limits are within 0.2% of
# the exact ones (0.17% at 10 events for the lower limit, the worst case; the upper one within
# 0.01%), so the exact interval is the reference at rel=2e-3, and Byar's own formula (what the
# engine computes) at the engine's fixed-point precision, rel=1e-5.
BYAR_VS_EXACT = 2e-3
MIN_EVENTS = 10


def test_rate_with_byar_interval(generated: Consortium) -> None:
    out = generated.query("SELECT ward, RATE(died, followup, 1000) AS per_1000 FROM patients GROUP BY ward")
    got = _released(out, ["ward"])
    for ward, grp in generated.pooled["patients"].groupby("ward"):
        e, t = int(grp.died.sum()), float(grp.followup.sum())
        assert e >= MIN_EVENTS, "the tolerance against the exact interval holds from 10 events"
        assert got.loc[ward, "per_1000"] == pytest.approx(1000 * e / t, rel=1e-6)
        low, high = got.loc[ward, "per_1000_ci_low"], got.loc[ward, "per_1000_ci_high"]
        byar_lo, byar_hi = _byar_from_normal(e)
        assert low == pytest.approx(1000 * byar_lo / t, rel=1e-5)
        assert high == pytest.approx(1000 * byar_hi / t, rel=1e-5)
        exact_lo, exact_hi = confint_poisson(e, 1.0, method="exact-c", alpha=ALPHA)  # Garwood, chi-square
        assert low == pytest.approx(1000 * exact_lo / t, rel=BYAR_VS_EXACT)
        assert high == pytest.approx(1000 * exact_hi / t, rel=BYAR_VS_EXACT)


def test_count_distinct_is_summed_per_site(generated: Consortium) -> None:
    out = generated.query("SELECT COUNT(DISTINCT region) AS regions FROM patients")
    per_site = sum(
        con.execute("SELECT COUNT(DISTINCT region) FROM patients").fetchone()[0] for con in generated.cons.values()
    )
    assert out["regions"].tolist() == [per_site]


def test_min_max_pooled(generated: Consortium) -> None:
    out = generated.query("SELECT sex, MIN(age) AS youngest, MAX(bmi) AS top FROM patients GROUP BY sex")
    got = _released(out, ["sex"])
    for sex, grp in generated.pooled["patients"].groupby("sex"):
        assert got.loc[sex, "youngest"] == grp.age.min()
        assert got.loc[sex, "top"] == pytest.approx(grp.bmi.max(), abs=2**-16)


def test_predicates_case_bins_dates_and_joins(generated: Consortium) -> None:
    out = generated.query(
        """
        SELECT CASE WHEN p.age < 40 THEN '<40' WHEN p.age < 65 THEN '40-64' ELSE '65+' END AS band,
               COUNT(*) AS n, AVG(l.hba1c) AS a1c
        FROM patients p JOIN labs l ON p.pid = l.pid
        WHERE p.region IN ('north', 'south') AND p.bmi BETWEEN 18.5 AND 40 AND p.ward LIKE 'c%'
          AND p.sbp IS NOT NULL AND NOT p.smoker
          AND date_diff('day', p.admitted, p.discharged) > 3
          AND (p.admitted >= DATE '2016-01-01' OR p.sex = 'F')
        GROUP BY band
        """
    )
    p = generated.pooled["patients"].merge(generated.pooled["labs"], on="pid")
    sel = p[
        p.region.isin(["north", "south"])
        & p.bmi.between(18.5, 40)
        & p.ward.str.startswith("c")
        & p.sbp.notna()
        & ~p.smoker
        & ((p.discharged - p.admitted).dt.days > 3)
        & ((p.admitted >= "2016-01-01") | (p.sex == "F"))
    ]
    band = np.where(sel.age < 40, "<40", np.where(sel.age < 65, "40-64", "65+"))
    got = out.set_index("band")
    for b, grp in sel.groupby(band):
        assert got.loc[b, "n"] == len(grp)
        np.testing.assert_allclose(got.loc[b, "a1c"], grp.hba1c.mean(), rtol=1e-6)
    assert list(out["band"]) == ["<40", "40-64", "65+"]
