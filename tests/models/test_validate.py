"""VALIDATE LOGISTIC in one process against scipy, pandas and statsmodels on the pooled rows.

References (independent of our code): the AUC as scipy's Mann-Whitney U / (P N) (ties 1/2, as
sklearn's roc_auc_score), the Brier score and calibration-in-the-large as pandas means, the
confusion matrix by pandas.crosstab, the calibration intercept and slope by statsmodels' Logit
of y on the linear predictor."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines.datasets import load_lung
from scipy.stats import mannwhitneyu

from mpc_jupyter.results import model_line
from site_agent.errors import QuerySyntaxError, UnsupportedQuery
from site_agent.models.statement import execute
from site_agent.models.validate import explain_validate, parse_linear_predictor
from site_agent.query import DisclosureRules, compile_query

from .conftest import split

LUNG_MODEL = "1.2 + 0.01*age - 0.5*C(sex)[2] + 0.3*ph_ecog"


def _lung() -> pd.DataFrame:
    lung = load_lung().rename(columns=lambda c: c.replace(".", "_")).dropna(subset=["inst"]).reset_index(drop=True)
    lung["status"] += 1
    lung["id"] = range(len(lung))
    return lung


@pytest.fixture(scope="module")
def lung_sites() -> tuple[pd.DataFrame, dict, object]:
    lung = _lung()
    cons, schema = split(lung, "lung", {"lung.sex": [1, 2], "lung.ph_ecog": [0, 1, 2, 3]}, "id")
    return lung, cons, schema


def _reference(frame: pd.DataFrame, y: np.ndarray, eta: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    p = 1.0 / (1.0 + np.exp(-eta))
    cal = sm.Logit(y, sm.add_constant(eta)).fit(disp=0, tol=1e-12)
    cells = pd.crosstab(pd.Series(y, name="y"), pd.Series(p >= threshold, name="hat")).reindex(
        index=[0, 1], columns=[False, True], fill_value=0
    )
    exact = np.round(eta, 9)  # the scores' decimal values: float64 noise breaks their ties
    u = mannwhitneyu(exact[y == 1], exact[y == 0]).statistic
    return {
        "n": len(y),
        "events": y.sum(),
        "auc": u / (y.sum() * (1 - y).sum()),
        "brier": float(np.mean((y - p) ** 2)),
        "citl": y.mean() - p.mean(),
        "cal_intercept": cal.params[0],
        "cal_slope": cal.params[1],
        "tp": cells.loc[1, True],
        "fp": cells.loc[0, True],
        "fn": cells.loc[1, False],
        "tn": cells.loc[0, False],
    }


def _lung_eta(frame: pd.DataFrame) -> np.ndarray:
    return (1.2 + 0.01 * frame.age - 0.5 * (frame.sex == 2) + 0.3 * frame.ph_ecog).to_numpy()


CELLS = ("tp", "fp", "fn", "tn")


def _close(row: pd.Series, ref: dict[str, float], tol: float = 1e-6, k: int = 5) -> None:
    """Every metric as the reference's; the confusion matrix withheld (all four cells) when a
    cell of the reference lies in 1..k-1."""
    withheld = any(0 < ref[c] < k for c in CELLS)
    for name, value in ref.items():
        if name in CELLS and withheld:
            assert np.isnan(row[name]), name
        else:
            assert row[name] == pytest.approx(value, rel=tol, abs=tol), name


def test_lung_equals_sklearn_and_statsmodels(lung_sites) -> None:
    lung, cons, schema = lung_sites
    text = f"VALIDATE LOGISTIC status = 2 ~ {LUNG_MODEL} FROM lung"
    out = execute(compile_query(text, schema, DisclosureRules()), cons)
    rows = lung.dropna(subset=["ph_ecog"])
    _close(out.loc["all"], _reference(rows, (rows.status == 2).to_numpy(int), _lung_eta(rows)))
    assert len(lung) - len(rows) == 1 and np.isnan(out.loc["all", "n_dropped"])  # 1 < k: withheld


def test_lung_by_sex_with_where_and_threshold(lung_sites) -> None:
    lung, cons, schema = lung_sites
    text = f"VALIDATE LOGISTIC status = 2 ~ {LUNG_MODEL} FROM lung WHERE age > 50 BY sex THRESHOLD 0.7"
    plan = compile_query(text, schema, DisclosureRules())
    out = execute(plan, cons)
    assert model_line(out) == "VALIDATE LOGISTIC · threshold 0.7 · AUC grid -10 to 10 step 0.0001"
    words = explain_validate(plan)
    assert "[analyst] auc:" in words and "[committee] released:" in words and "GROUP BY gi, bin" in words
    for sex in (1, 2):
        rows = lung[(lung.age > 50) & (lung.sex == sex)].dropna(subset=["ph_ecog"])
        _close(out.loc[sex], _reference(rows, (rows.status == 2).to_numpy(int), _lung_eta(rows), 0.7))


def test_spector_equals_sklearn_and_statsmodels() -> None:
    data = sm.datasets.spector.load_pandas().data
    cons, schema = split(data, "spector")
    text = "VALIDATE LOGISTIC GRADE ~ -13.0213 + 2.82611*GPA + 0.0951577*TUCE + 2.37869*PSI FROM spector"
    out = execute(compile_query(text, schema, DisclosureRules()), cons)
    eta = (-13.0213 + 2.82611 * data.GPA + 0.0951577 * data.TUCE + 2.37869 * data.PSI).to_numpy()
    _close(out.loc["all"], _reference(data, data.GRADE.to_numpy(int), eta))


def test_signs_and_exponents() -> None:
    terms = parse_linear_predictor("1.5e-1 + -0.4*x2 - -2*x3 - 1e+1*C(s)['a']*z")
    assert [(t.coef, t.label) for t in terms] == [
        (0.15, "Intercept"),
        (-0.4, "x2"),
        (2.0, "x3"),
        (-10.0, "C(s)['a']:z"),
    ]


def test_syntax_errors(lung_sites) -> None:
    _, _, schema = lung_sites
    with pytest.raises(UnsupportedQuery):
        compile_query("VALIDATE LOGISTIC status = 2 ~ 1 + 0.5*C(sex)[7] FROM lung", schema, DisclosureRules())
    with pytest.raises(QuerySyntaxError):
        compile_query("VALIDATE LOGISTIC status = 2 ~ 1 + 0.5*(age FROM lung", schema, DisclosureRules())
    with pytest.raises(UnsupportedQuery):
        compile_query("VALIDATE LOGISTIC status = 2 ~ 1 + age FROM lung THRESHOLD 1.5", schema, DisclosureRules())


def test_a_member_without_data_adds_nothing(lung_sites) -> None:
    lung, cons, schema = lung_sites
    empty = duckdb.connect()
    empty.register("lung_rows", lung)
    empty.execute("CREATE TABLE lung AS SELECT * FROM lung_rows LIMIT 0")
    two = {"site0": cons["site0"], "site1": cons["site1"], "neutral": empty}
    text = f"VALIDATE LOGISTIC status = 2 ~ {LUNG_MODEL} FROM lung"
    out = execute(compile_query(text, schema, DisclosureRules()), two, without_data=("neutral",))
    held = len(cons["site0"].execute("SELECT * FROM lung").fetchall()) + len(
        cons["site1"].execute("SELECT * FROM lung").fetchall()
    )
    rows = lung.iloc[:held].dropna(subset=["ph_ecog"])
    _close(out.loc["all"], _reference(rows, (rows.status == 2).to_numpy(int), _lung_eta(rows)))


def test_without_calibration(lung_sites) -> None:
    lung, cons, schema = lung_sites
    text = f"VALIDATE LOGISTIC status = 2 ~ {LUNG_MODEL} FROM lung WITHOUT CALIBRATION THRESHOLD 0.7"
    out = execute(compile_query(text, schema, DisclosureRules()), cons)
    rows = lung.dropna(subset=["ph_ecog"])
    ref = _reference(rows, (rows.status == 2).to_numpy(int), _lung_eta(rows), 0.7)
    assert np.isnan(out.loc["all", "cal_slope"]) and np.isnan(out.loc["all", "cal_intercept"])
    _close(out.loc["all"], {k: v for k, v in ref.items() if not k.startswith("cal_")})
    assert out.attrs["rounds"] < 100
