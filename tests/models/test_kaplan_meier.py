"""KAPLAN_MEIER in one process (three sites' local SQL, the MPC program under run_in_memory, the
analyst's assembly) against lifelines on the pooled rows: lung split by institution, GBSG2."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from site_agent.errors import PolicyRefusal, QueryError, QuerySyntaxError, UnsupportedQuery
from site_agent.models.distributions import chi2_sf
from site_agent.models.kaplan_meier import KaplanMeier, logrank_table, split_statement
from site_agent.query import DisclosureRules, compile_query, explain

from .km_reference import check_group, check_logrank
from .km_sites import gbsg2_sites, lung_sites

BY_SEX = "KAPLAN_MEIER time, status = 2 BY sex FROM lung AT 0 TO 1100 STEP 1"


def test_lung_by_sex_without_coarsening_equals_lifelines() -> None:
    """k = 1: every grid day is a step, so the curve, its interval, the medians and the log-rank
    test are lifelines' own (medians 269 and 426 on these 227 rows; R's 270 counts the 228th
    row, which has no institution)."""
    sites = lung_sites(1)
    out = sites.query(BY_SEX)
    pooled = sites.pooled["lung"]
    for sex, median in ((1, 269.0), (2, 426.0)):
        rows = pooled[pooled.sex == sex]
        ours = check_group(out, rows, rows.status == 2, 1, sex=sex)
        reference = KaplanMeierFitter().fit(rows.time, rows.status == 2)
        assert ours.median_survival_time_ == reference.median_survival_time_ == median
        assert len(ours.event_table) == rows.time.nunique()  # every distinct time is a step
    males, females = pooled[pooled.sex == 1], pooled[pooled.sex == 2]
    ref = logrank_test(males.time, females.time, males.status == 2, females.status == 2)
    test = out.attrs["logrank"]
    assert abs(test["test_statistic"] - ref.test_statistic) < 1e-6
    assert abs(test["test_statistic"] - 10.2057) < 1e-4
    assert abs(test["p_value"] - ref.p_value) < 1e-6
    assert test["degrees_of_freedom"] == 1
    assert test["observed"] == [float((males.status == 2).sum()), float((females.status == 2).sum())]


def test_lung_by_sex_at_k5_releases_coarsened_steps() -> None:
    """k = 5: steps merge until events and censorings are 0 or >= 5 each; the curve is
    lifelines' at every released step; the log-rank test (on the fine grid) is unchanged; the
    medians are the first released time with S <= 0.5, at or after lifelines'."""
    sites = lung_sites(5)
    out = sites.query(BY_SEX)
    pooled = sites.pooled["lung"]
    for sex in (1, 2):
        rows = pooled[pooled.sex == sex]
        ours = check_group(out, rows, rows.status == 2, 5, sex=sex)
        reference = KaplanMeierFitter().fit(rows.time, rows.status == 2)
        sf = ours.survival_function_.iloc[:, 0]
        assert ours.median_survival_time_ == sf.index[sf <= 0.5].min() >= reference.median_survival_time_
        assert 3 <= len(ours.event_table) < rows.time.nunique()
    check_logrank(out, pooled, pooled.status == 2, pooled.sex)
    assert [g["n"] for g in out.attrs["groups"]] == [int((pooled.sex == s).sum()) for s in (1, 2)]


def test_gbsg2_by_hormone_therapy_on_the_schema_grid() -> None:
    """GBSG2: the time column's grid in the schema ([0, 2700, 1] days), a 0/1 event column."""
    for k in (1, 5):
        sites = gbsg2_sites(k)
        out = sites.query("KAPLAN_MEIER time, cens BY horTh FROM gbsg2")
        pooled = sites.pooled["gbsg2"]
        for arm in ("no", "yes"):
            rows = pooled[pooled.horTh == arm]
            ours = check_group(out, rows, rows.cens == 1, k, horTh=arm)
            if k == 1:
                reference = KaplanMeierFitter().fit(rows.time, rows.cens == 1)
                assert ours.median_survival_time_ == reference.median_survival_time_
        check_logrank(out, pooled, pooled.cens == 1, pooled.horTh)


def test_four_groups_and_a_suppressed_one() -> None:
    """BY ph_ecog: ECOG 3 (one patient) and the (other) cell (one NULL) have no curve; the
    multivariate log-rank test runs over the three released groups, as lifelines on their rows."""
    sites = lung_sites(5)
    out = sites.query("KAPLAN_MEIER time, status = 2 BY ph_ecog FROM lung WHERE age >= 40 AT 0 TO 1100 STEP 1")
    pooled = sites.pooled["lung"]
    pooled = pooled[pooled.age >= 40]
    info = {g["ph_ecog"]: g for g in out.attrs["groups"]}
    assert info[3]["n"] == "<5" and not info[3]["curve"]
    assert set(out["ph_ecog"]) == {0, 1, 2}
    for ecog in (0, 1, 2):
        rows = pooled[pooled.ph_ecog == ecog]
        check_group(out, rows, rows.status == 2, 5, ph_ecog=ecog)
    kept = pooled[pooled.ph_ecog.isin([0, 1, 2])]
    check_logrank(out, kept, kept.status == 2, kept.ph_ecog)
    assert out.attrs["logrank"]["degrees_of_freedom"] == 2
    table = logrank_table(out)
    assert list(table.index) == ["0", "1", "2"] and table.attrs["degrees_of_freedom"] == 2


def test_at_times_report_events_at_the_next_grid_point() -> None:
    """A coarse AT grid: a time in (t_{j-1}, t_j] is reported at t_j, times after the last AT
    time are censored there. The reference is lifelines on the times so mapped (pandas)."""
    at = [90, 180, 365, 540, 730]
    sites = lung_sites(1)
    out = sites.query(f"KAPLAN_MEIER time, status = 2 FROM lung AT {', '.join(map(str, at))}")
    pooled = sites.pooled["lung"]
    grid = np.array(at, dtype=float)
    mapped = grid[np.minimum(np.searchsorted(grid, pooled.time.to_numpy(), side="left"), len(grid) - 1)]
    event = (pooled.status == 2) & (pooled.time <= grid[-1])
    rows = pd.DataFrame({"time": mapped})
    check_group(out, rows, event.reset_index(drop=True), 1)
    assert out.attrs["logrank"] is None  # one group: no test


def test_no_group_and_a_where_clause() -> None:
    sites = lung_sites(5)
    out = sites.query("KAPLAN_MEIER time, status = 2 FROM lung WHERE ph_karno >= 80 AT 0 TO 1100 STEP 1")
    pooled = sites.pooled["lung"]
    rows = pooled[pooled.ph_karno >= 80]
    check_group(out, rows, rows.status == 2, 5)
    assert out.attrs["groups"] == [{"n": len(rows), "curve": True, "median": KaplanMeier(out).median_survival_time_}]


def test_explain_names_every_reveal_point() -> None:
    sites = lung_sites(5)
    plan = compile_query(BY_SEX, sites.schema, sites.rules, tuple(sites.cons))
    assert plan.kind == "model"
    text = explain(plan)
    for word in ("km_steps", "km_curve", "logrank", "[km]", "GROUP BY"):
        assert word in text
    assert plan.digest() == compile_query(BY_SEX, sites.schema, sites.rules, tuple(sites.cons)).digest()


def test_statement_errors() -> None:
    sites = lung_sites(5)

    def compile_(text: str) -> object:
        return compile_query(text, sites.schema, sites.rules, tuple(sites.cons))

    with pytest.raises(QuerySyntaxError, match="FROM is missing"):
        compile_("KAPLAN_MEIER time, status = 2 BY sex")
    with pytest.raises(QuerySyntaxError, match="time and an event"):
        compile_("KAPLAN_MEIER time FROM lung")
    with pytest.raises(UnsupportedQuery, match="public grid"):
        compile_("KAPLAN_MEIER time, status = 2 FROM lung")
    with pytest.raises(UnsupportedQuery, match="increase strictly"):
        compile_("KAPLAN_MEIER time, status = 2 FROM lung AT 30, 10")
    with pytest.raises(UnsupportedQuery, match="AT lo TO hi STEP s"):
        compile_("KAPLAN_MEIER time, status = 2 FROM lung AT " + ", ".join(map(str, range(1001))))
    with pytest.raises(UnsupportedQuery, match="public domain"):
        compile_("KAPLAN_MEIER time, status = 2 BY inst FROM lung AT 0 TO 1100 STEP 1")
    with pytest.raises(UnsupportedQuery, match="cannot read the statement"):  # a clause smuggled into WHERE
        compile_("KAPLAN_MEIER time, status = 2 FROM lung WHERE age > 0) GROUP BY (sex AT 0 TO 1100 STEP 1")
    with pytest.raises(QueryError):  # an aggregate smuggled into the time
        compile_("KAPLAN_MEIER time), SUM(age, status = 2 FROM lung AT 0 TO 1100 STEP 1")
    refusing = DisclosureRules(min_cell_size=5, statement_kinds=frozenset({"aggregate"}))
    with pytest.raises(PolicyRefusal, match="model"):
        compile_query(BY_SEX, sites.schema, refusing, tuple(sites.cons))
    with pytest.raises(PolicyRefusal, match="rounds every released count"):
        compile_query(BY_SEX, sites.schema, DisclosureRules(round_counts=5), tuple(sites.cons))


def test_split_statement_keeps_nested_words() -> None:
    st = split_statement(
        "kaplan_meier (time), CASE WHEN status = 2 THEN 1 ELSE 0 END BY sex, ph_ecog "
        "FROM lung WHERE inst IN (SELECT 1) AND time > 0 AT 1, 2.5, 10"
    )
    assert (st.time, st.by, st.source, st.at) == ("(time)", ("sex", "ph_ecog"), "lung", "1, 2.5, 10")
    assert st.event == "CASE WHEN status = 2 THEN 1 ELSE 0 END"
    assert st.where == "inst IN (SELECT 1) AND time > 0"


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7])
def test_chi_square_tail(df: int) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for x in (0.1, 1.0, 3.84, 10.2, 40.0):
        assert abs(chi2_sf(x, df) - float(scipy_stats.chi2.sf(x, df))) < 1e-12


def test_plot_draws_one_step_curve_with_a_band_per_group() -> None:
    from mpc_jupyter.charts import plot

    out = lung_sites(5).query(BY_SEX)
    ax = plot(out).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["sex = 1", "sex = 2"]
    assert len(ax.collections) == 2  # the confidence bands
    first = ax.get_lines()[0].get_xydata()
    assert tuple(first[0]) == (0.0, 1.0)  # every curve starts at 1


def test_the_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The python example of docs/models.md, "Kaplan-Meier and log-rank", as printed there."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "models.md"
    section = doc.read_text().split("## Kaplan-Meier and log-rank", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, str(doc), "exec"), namespace)
    out = namespace["out"]
    assert isinstance(out, pd.DataFrame) and out.attrs["logrank"]["degrees_of_freedom"] == 1
