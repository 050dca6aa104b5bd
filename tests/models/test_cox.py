"""COX on lung split across three sites, run in one process, against R, lifelines and
statsmodels on the pooled rows."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter
from lifelines.datasets import load_lung
from lifelines.utils import concordance_index

from site_agent.errors import ModelRefused, QueryError
from site_agent.models.statement import execute, kind_of
from site_agent.query import DisclosureRules, compile_query
from site_agent.query.catalog import schema_from_duckdb

from ..lung import lung_by_site
from .conftest import in_se, relative, split

DOMAINS = {"lung.sex": [1, 2], "lung.ph_ecog": [0, 1, 2, 3]}
GRIDS = {"lung.time": (0.0, 1100.0, 1.0), "lung.age": (30.0, 90.0, 1.0)}


def sites(frame: pd.DataFrame, grids: dict | None = None) -> tuple[dict, object]:
    cons, _ = split(frame, "lung")
    return cons, schema_from_duckdb(cons["site0"], DOMAINS, grids or GRIDS, {"lung": "id"})


@pytest.fixture(scope="module")
def lung() -> tuple[pd.DataFrame, dict, object]:
    """All 228 rows of R's lung data (status 1 censored, 2 dead), split in three."""
    data = load_lung().rename(columns=lambda c: c.replace(".", "_"))
    data["status"] = data["status"] + 1
    data.insert(0, "id", range(1, len(data) + 1))
    return (data, *sites(data))


@pytest.fixture(scope="module")
def by_institution() -> tuple[pd.DataFrame, dict, object]:
    """The lung rows with an institution, split by institution into three sites (tests/lung.py)."""
    cons = {}
    for name, frame in lung_by_site().items():
        con = duckdb.connect()
        con.register("part", frame)
        con.execute("CREATE TABLE lung AS SELECT * FROM part")
        con.unregister("part")
        cons[name] = con
    pooled = pd.concat(list(lung_by_site().values()), ignore_index=True)
    return pooled, cons, schema_from_duckdb(cons["north"], DOMAINS, GRIDS, {"lung": "id"})


def fit(text: str, cons: dict, schema: object, rules: DisclosureRules | None = None) -> pd.DataFrame:
    return execute(compile_query(text, schema, rules or DisclosureRules()), cons)  # type: ignore[arg-type]


def lifelines_fit(frame: pd.DataFrame, columns: list[str], formula: str | None = None) -> CoxPHFitter:
    rows = frame[["time", "status", *columns]].dropna().assign(dead=lambda f: (f.status == 2) * 1)
    return CoxPHFitter().fit(
        rows.drop(columns="status"), "time", "dead", formula=formula, fit_options={"precision": 1e-12}
    )


def test_efron_equals_r_and_lifelines(lung: tuple) -> None:
    pooled, cons, schema = lung
    ours = fit("COX time, status = 2 ~ age + sex FROM lung", cons, schema)
    # R 4: coxph(Surv(time, status) ~ age + sex, data = lung), printed to 6 decimals
    assert ours.loc["age", "coef"] == pytest.approx(0.017045, abs=1e-6)
    assert ours.loc["sex", "coef"] == pytest.approx(-0.513219, abs=1e-6)
    assert ours.loc["age", "se(coef)"] == pytest.approx(0.009223, abs=1e-6)
    assert ours.loc["sex", "se(coef)"] == pytest.approx(0.167458, abs=1e-6)
    ref = lifelines_fit(pooled, ["age", "sex"])
    assert relative(ours["coef"], ref.params_) < 1e-5
    assert relative(ours["se(coef)"], ref.standard_errors_) < 1e-5
    assert relative(ours["p"], ref.summary["p"]) < 1e-5
    assert relative(ours["exp(coef) upper 95%"], ref.summary["exp(coef) upper 95%"]) < 1e-5
    assert ours.attrs["llf"] == pytest.approx(ref.log_likelihood_, rel=1e-7)
    lr = ref.log_likelihood_ratio_test()
    assert ours.attrs["lr_test"] == pytest.approx(lr.test_statistic, rel=1e-6)
    assert ours.attrs["lr_p"] == pytest.approx(lr.p_value, rel=1e-5)
    assert (ours.attrs["n"], ours.attrs["events"], ours.attrs["n_dropped"]) == (228, 165, 0)
    assert ours.attrs["ties"] == "efron" and ours.attrs["converged"]


def test_concordance_equals_lifelines(by_institution: tuple) -> None:
    """Harrell's C against lifelines on the pooled rows: exact (to the quotient's 7.5e-9) when
    no two distinct predictors of a comparable pair share a risk bin, as on lung by institution."""
    from mpc_jupyter.results import model_line

    pooled, cons, schema = by_institution
    ours = fit("COX time, status = 2 ~ age + sex FROM lung", cons, schema)
    ref = lifelines_fit(pooled, ["age", "sex"])
    assert ours.attrs["concordance"] == pytest.approx(ref.concordance_index_, abs=1e-8)
    rows = pooled[["time", "status", "age", "sex"]].dropna()
    scores = -ref.predict_partial_hazard(rows)
    assert ref.concordance_index_ == pytest.approx(concordance_index(rows.time, scores, rows.status == 2), abs=1e-15)
    assert f"Concordance = {ref.concordance_index_:.4f}" in model_line(ours)
    three = fit("COX time, status = 2 ~ age + sex + ph_ecog FROM lung", cons, schema)
    ref = lifelines_fit(pooled, ["age", "sex", "ph_ecog"])
    assert three.attrs["concordance"] == pytest.approx(ref.concordance_index_, abs=1e-8)


def test_concordance_within_the_binning_bound(lung: tuple) -> None:
    """All 228 rows with ph_ecog: two distinct predictors 3.5e-4 apart share a risk bin (1.4e-3
    wide) and count as tied; C is then off by at most half the share of comparable pairs whose
    predictors differ by less than a bin (docs/models.md): 1.4e-3 here, 2.0e-4 measured."""
    pooled, cons, schema = lung
    ours = fit("COX time, status = 2 ~ age + sex + ph_ecog FROM lung", cons, schema)
    ref = lifelines_fit(pooled, ["age", "sex", "ph_ecog"])
    rows = pooled[["time", "status", "age", "sex", "ph_ecog"]].dropna()
    risk = rows[["age", "sex", "ph_ecog"]].to_numpy() @ ref.params_.to_numpy()
    width = 2 * float(np.sum(np.abs(ref.params_.to_numpy() * [30.0, 0.5, 1.5]))) / ours.attrs["risk_bins"]
    t, dead = rows.time.to_numpy(), (rows.status == 2).to_numpy()
    later = (t[None, :] > t[:, None]) | ((t[None, :] == t[:, None]) & ~dead[None, :])
    comparable = dead[:, None] & later
    close = (
        comparable & (np.abs(risk[:, None] - risk[None, :]) < width) & (np.round(risk[:, None] - risk[None, :], 9) != 0)
    )
    error = abs(ours.attrs["concordance"] - ref.concordance_index_)
    assert 0 < error <= 0.5 * close.sum() / comparable.sum() and error < 1e-3  # bound 1.4e-3


def test_breslow_equals_statsmodels_phreg(lung: tuple) -> None:
    pooled, cons, schema = lung
    ours = fit("COX time, status = 2 ~ age + sex + ph_ecog FROM lung TIES BRESLOW", cons, schema)
    rows = pooled[["time", "status", "age", "sex", "ph_ecog"]].dropna()
    ref = sm.PHReg(rows.time, rows[["age", "sex", "ph_ecog"]], status=(rows.status == 2) * 1, ties="breslow").fit(
        tol=1e-12
    )
    names = pd.Index(["age", "sex", "ph_ecog"])
    assert relative(ours["coef"], pd.Series(ref.params, names)) < 1e-5
    assert relative(ours["se(coef)"], pd.Series(ref.bse, names)) < 1e-5
    assert ours.attrs["llf"] == pytest.approx(ref.llf, rel=1e-7)
    assert len(pooled) - len(rows) == 1 and ours.attrs["n_dropped"] is None  # one dropped row: withheld (1..k-1)


def test_categorical_term_interaction_and_where_equal_lifelines(lung: tuple) -> None:
    pooled, cons, schema = lung
    ours = fit(
        "COX time, status = 2 ~ age + C(sex, Treatment(2)) + age:C(sex, 2) FROM lung WHERE ph_ecog <= 1", cons, schema
    )
    rows = pooled[pooled.ph_ecog <= 1].assign(female=lambda f: (f.sex == 1) * 1)
    ref = lifelines_fit(rows.assign(age_female=rows.age * rows.female), ["age", "female", "age_female"])
    names = {"female": "C(sex)[T.1]", "age_female": "age:C(sex)[T.1]"}
    assert list(ours.index) == ["age", "C(sex)[T.1]", "age:C(sex)[T.1]"]
    # C(sex)[T.1] is 0.05 standard errors from zero and collinear with age:C(sex)[T.1]: without
    # the polishing steps it is off by about 1e-6 of a standard error, 6e-5 of itself
    assert in_se(ours, ref.params_.rename(names), ref.standard_errors_.rename(names)) < 1e-6
    assert relative(ours["coef"], ref.params_.rename(names)) < 1e-5
    assert relative(ours["se(coef)"], ref.standard_errors_.rename(names)) < 1e-5
    assert ours.attrs["n"] == len(rows)


def test_strata_equal_lifelines_and_statsmodels(lung: tuple) -> None:
    """STRATA sex: a baseline hazard per sex, risk sets within each (lifelines' ``strata``,
    statsmodels' ``PHReg(strata=...)``)."""
    pooled, cons, schema = lung
    rows = pooled[["time", "status", "age", "ph_ecog", "sex"]].dropna().assign(dead=lambda f: (f.status == 2) * 1)
    efron = fit("COX time, status = 2 ~ age + ph_ecog FROM lung STRATA sex", cons, schema)
    ref = CoxPHFitter().fit(
        rows.drop(columns="status"), "time", "dead", strata=["sex"], fit_options={"precision": 1e-12}
    )
    assert relative(efron["coef"], ref.params_) < 1e-5
    assert relative(efron["se(coef)"], ref.standard_errors_) < 1e-5
    assert efron.attrs["llf"] == pytest.approx(ref.log_likelihood_, rel=1e-7)
    assert efron.attrs["concordance"] == pytest.approx(ref.concordance_index_, abs=1e-8)  # within strata
    breslow = fit("COX time, status = 2 ~ age + ph_ecog FROM lung TIES BRESLOW STRATA sex", cons, schema)
    sm_ref = sm.PHReg(rows.time, rows[["age", "ph_ecog"]], status=rows.dead, strata=rows.sex, ties="breslow").fit(
        tol=1e-12
    )
    assert relative(breslow["coef"], pd.Series(sm_ref.params, ["age", "ph_ecog"])) < 1e-5
    assert relative(breslow["se(coef)"], pd.Series(sm_ref.bse, ["age", "ph_ecog"])) < 1e-5


def test_a_stratum_of_one_patient_is_refused(lung: tuple) -> None:
    """ph_ecog = 3 is one patient: as a stratum it is a query set below k."""
    _, cons, schema = lung
    with pytest.raises(ModelRefused, match="min_cell_size"):
        fit("COX time, status = 2 ~ age + sex FROM lung STRATA ph_ecog", cons, schema)


def test_times_between_grid_points_are_rounded_down(lung: tuple) -> None:
    """On a 30-day grid the fit is Breslow's on the times rounded down to the grid."""
    pooled, _, _ = lung
    cons, schema = sites(pooled, {**GRIDS, "lung.time": (0.0, 1080.0, 30.0)})
    ours = fit("COX time, status = 2 ~ age + sex FROM lung TIES BRESLOW", cons, schema)
    rows = pooled[pooled.time <= 1080]
    ref = sm.PHReg(
        np.floor(rows.time / 30) * 30, rows[["age", "sex"]], status=(rows.status == 2) * 1, ties="breslow"
    ).fit(tol=1e-12)
    assert relative(ours["coef"], pd.Series(ref.params, ["age", "sex"])) < 1e-5
    assert ours.attrs["n_dropped"] == len(pooled) - len(rows)  # beyond the grid


def test_efron_with_many_ties_is_refused(lung: tuple) -> None:
    pooled, _, _ = lung
    cons, schema = sites(pooled, {**GRIDS, "lung.time": (0.0, 1080.0, 30.0)})
    with pytest.raises(ModelRefused, match="TIES BRESLOW"):
        fit("COX time, status = 2 ~ age + sex FROM lung", cons, schema)


def test_events_are_withheld_when_few_rows_are_censored(lung: tuple) -> None:
    """n and events released together give the censored rows by subtraction: with 1..k-1 of
    them (here 2), events is withheld and the model released."""
    pooled, cons, schema = lung
    ours = fit("COX time, status = 2 ~ age + sex FROM lung WHERE time < 150", cons, schema)
    rows = pooled[pooled.time < 150]
    assert (len(rows), int((rows.status == 1).sum())) == (49, 2)
    assert ours.attrs["n"] == 49 and ours.attrs["events"] is None
    ref = lifelines_fit(rows, ["age", "sex"])
    assert relative(ours["coef"], ref.params_) < 1e-5


def test_too_few_events_per_term_is_refused(lung: tuple) -> None:
    _, cons, schema = lung
    with pytest.raises(ModelRefused, match="events per term"):
        fit("COX time, status = 2 ~ age + sex + ph_ecog FROM lung WHERE age > 72", cons, schema)  # 25 events, 3 terms


@pytest.mark.parametrize(
    "text",
    [
        "COX time ~ age FROM lung",
        "COX time, status = 2 ~ FROM lung",
        "COX ph_karno, status = 2 ~ age FROM lung",  # no grid on the time
        "COX time, status = 2 ~ meal_cal FROM lung",  # no bounds on a numeric term
        "COX time, status = 2 ~ I(age / 10) FROM lung",
        "COX time, status = 2 ~ age FROM lung TIES EXACT",
        "COX time, status = 2 ~ age FROM lung STRATA age",  # no domain
        "COX time, status = 2 ~ age FROM lung STRATA sex STRATA ph_ecog",
        "COX time, status = 2 ~ age + sex FROM lung STRATA sex",
    ],
)
def test_bad_statements_are_refused(lung: tuple, text: str) -> None:
    _, _, schema = lung
    with pytest.raises(QueryError):
        compile_query(text, schema, DisclosureRules())


def test_explain_lists_every_reveal_point(lung: tuple) -> None:
    _, _, schema = lung
    plan = compile_query("COX time, status = 2 ~ age + sex FROM lung", schema, DisclosureRules())
    kind = kind_of(plan)
    assert kind is not None
    text = kind.explain(plan)
    for name in ("iterate", "rules", "local_failed", "coef", "se", "llf", "llf_null", "events", "concordance"):
        assert f"] {name}:" in text
    assert "__eta__" in text and "1101 bins" in text


def test_a_site_beyond_the_quotients_range_fails_its_local_step(lung: tuple) -> None:
    """exp(x'b) summed over a site's rows must stay below 2^25 (else a pooled risk-set sum could
    leave the quotients' range): beyond, the site's vector is the secret failure vector."""
    _, cons, schema = lung
    plan = compile_query("COX time, status = 2 ~ age + sex FROM lung", schema, DisclosureRules())
    kind = kind_of(plan)
    assert kind is not None
    fine = kind.local(plan, cons["site0"], True, {"beta": [1.0, -0.5]})
    assert fine[0] == 0 and fine[1:].any()
    beyond = kind.local(plan, cons["site0"], True, {"beta": [40.0, 0.0]})  # exp(21) for the oldest
    assert beyond[0] != 0 and not beyond[1:].any()


def test_a_member_without_data_adds_nothing(lung: tuple) -> None:
    """Two hospitals and a neutral member whose table is empty."""
    pooled, cons, schema = lung
    empty = duckdb.connect()
    empty.execute("CREATE TABLE lung AS SELECT * FROM pooled LIMIT 0")
    two = {"site0": cons["site0"], "site1": cons["site1"], "neutral": empty}
    plan = compile_query("COX time, status = 2 ~ age + sex FROM lung TIES BRESLOW", schema, DisclosureRules())
    ours = execute(plan, two, without_data=("neutral",))
    held = len(pooled) - len(cons["site2"].execute("SELECT * FROM lung").fetchall())
    rows = pooled.iloc[:held]
    ref = sm.PHReg(rows.time, rows[["age", "sex"]], status=(rows.status == 2) * 1, ties="breslow").fit(tol=1e-12)
    assert relative(ours["coef"], pd.Series(ref.params, ["age", "sex"])) < 1e-5
    assert ours.attrs["n"] == held


def test_a_cox_result_renders_in_the_notebook(lung: tuple) -> None:
    """The magic's result object: the fit line (events, log partial likelihood, LR test) and a
    forest plot from lifelines-named intervals."""
    from mpc_jupyter.charts import plot
    from mpc_jupyter.results import as_result

    _, cons, schema = lung
    plan = compile_query("COX time, status = 2 ~ age + C(sex) FROM lung", schema, DisclosureRules())
    frame = execute(plan, cons)
    frame.attrs.update(plan=plan.data, sites=list(cons))
    html = as_result(frame, query="COX ...")._repr_html_()
    assert "COX (efron ties)" in html and "events = 165" in html and "LR test" in html and "converged in" in html
    figure = plot(as_result(frame, query="COX ..."))
    assert sorted(t.get_text() for t in figure.axes[0].get_yticklabels()) == sorted(frame.index)


def test_explain_renders_in_the_teaching_view(lung: tuple) -> None:
    from mpc_jupyter.teaching import Explanation

    _, _, schema = lung
    plan = compile_query("COX time, status = 2 ~ age + ph_ecog FROM lung STRATA sex", schema, DisclosureRules())
    kind = kind_of(plan)
    assert kind is not None
    view = Explanation(kind.explain(plan))
    assert set(view.sections) == {1, 2, 3, 4}
    assert len(view.reveals) == len(plan.data["reveals"])
    assert "strata: sex (2)" in kind.explain(plan)
