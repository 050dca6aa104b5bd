"""VALIDATE COX in one process against lifelines' ``concordance_index`` on the pooled rows
(lung split by institution into three sites)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index

from mpc_jupyter.results import as_result, model_line
from site_agent.errors import ModelRefused, QueryError, QuerySyntaxError, UnsupportedQuery
from site_agent.models.statement import execute, kind_of
from site_agent.query import DisclosureRules, compile_query
from site_agent.query.catalog import schema_from_duckdb

from ..lung import lung_by_site
from .conftest import split
from .test_cox import DOMAINS, GRIDS

SCORE = "0.017*age - 0.51*C(sex)[2] + 0.45*ph_ecog"


def score(rows: pd.DataFrame) -> np.ndarray:
    """The score at its decimal values (float64 noise would break its exact ties, as in
    test_validate.py)."""
    return np.round((0.017 * rows.age - 0.51 * (rows.sex == 2) + 0.45 * rows.ph_ecog).to_numpy(), 9)


def harrell(rows: pd.DataFrame) -> float:
    return float(concordance_index(rows.time, -score(rows), rows.status == 2))


def connect(frames: dict[str, pd.DataFrame]) -> dict:
    cons = {}
    for name, frame in frames.items():
        con = duckdb.connect()
        con.register("part", frame)
        con.execute("CREATE TABLE lung AS SELECT * FROM part")
        con.unregister("part")
        cons[name] = con
    return cons


@pytest.fixture(scope="module")
def lung() -> tuple[pd.DataFrame, dict, object]:
    cons = connect(lung_by_site())
    pooled = pd.concat(list(lung_by_site().values()), ignore_index=True)
    return pooled, cons, schema_from_duckdb(cons["north"], DOMAINS, GRIDS, {"lung": "id"})


def run(text: str, cons: dict, schema: object) -> pd.DataFrame:
    return execute(compile_query(text, schema, DisclosureRules()), cons)  # type: ignore[arg-type]


def test_by_sex_equals_lifelines(lung: tuple) -> None:
    pooled, cons, schema = lung
    out = run(f"VALIDATE COX time, status = 2 ~ {SCORE} FROM lung BY sex", cons, schema)
    rows = pooled.dropna(subset=["ph_ecog"])
    for sex, group in rows.groupby("sex"):
        assert out.loc[sex, "concordance"] == pytest.approx(harrell(group), abs=1e-8)
        assert (out.loc[sex, "n"], out.loc[sex, "events"]) == (len(group), (group.status == 2).sum())
    assert np.isnan(out.loc[1, "n_dropped"]) and out.loc[2, "n_dropped"] == 0  # one man without ECOG: withheld
    assert out["released"].all()
    assert model_line(out).startswith("VALIDATE COX · time grid 0 to 1100 step 1 · risk grid from 0 step")
    html = as_result(out, query="VALIDATE COX ...")._repr_html_()
    assert "VALIDATE COX · time grid" in html and "concordance" in html


def test_where_and_grid_equal_lifelines(lung: tuple) -> None:
    """A WHERE, and a GRID clause for the scores (bins of 0.002 from 0)."""
    pooled, cons, schema = lung
    text = f"VALIDATE COX time, status = 2 ~ {SCORE} FROM lung WHERE age > 50 GRID 0 TO 3 STEP 0.002"
    out = run(text, cons, schema)
    rows = pooled[pooled.age > 50].dropna(subset=["ph_ecog"])
    assert out.loc["all", "concordance"] == pytest.approx(harrell(rows), abs=1e-8)
    assert out.attrs["risk_grid"] == {"lo": 0.0, "step": 0.002, "bins": 1501}


def test_the_fitted_cox_score_gives_the_fits_concordance(lung: tuple) -> None:
    """The same machinery as COX's concordance: at COX's coefficients, the same C."""
    _, cons, schema = lung
    fit = execute(compile_query("COX time, status = 2 ~ age + sex FROM lung", schema, DisclosureRules()), cons)
    coef = fit["coef"]
    text = f"VALIDATE COX time, status = 2 ~ {float(coef['age'])!r}*age + {float(coef['sex'])!r}*sex FROM lung"
    out = run(text, cons, schema)
    assert out.loc["all", "concordance"] == pytest.approx(fit.attrs["concordance"], abs=1e-8)


def test_a_group_below_k_is_withheld(lung: tuple) -> None:
    """By ECOG grade: grade 3 is one patient, withheld; the others equal lifelines."""
    pooled, cons, schema = lung
    out = run("VALIDATE COX time, status = 2 ~ 0.017*age - 0.51*C(sex)[2] FROM lung BY ph_ecog", cons, schema)
    assert not out.loc[3, "released"] and np.isnan(out.loc[3, "concordance"])
    for grade in (0, 1, 2):
        rows = pooled[pooled.ph_ecog == grade]
        eta = np.round((0.017 * rows.age - 0.51 * (rows.sex == 2)).to_numpy(), 9)
        assert out.loc[grade, "concordance"] == pytest.approx(
            concordance_index(rows.time, -eta, rows.status == 2), abs=1e-8
        )


@pytest.mark.parametrize(
    "text",
    [
        "VALIDATE COX time, status = 2 ~ 0.017*age - 0.51*C(sex)[2] FROM lung BY ph_ecog",
        "VALIDATE COX time, status = 2 ~ 0.017*age FROM lung WHERE ph_ecog = 3 OR (ph_ecog = 2 AND age > 70)",
    ],
)
def test_the_lone_ecog_3_patients_outcome_changes_no_release(lung: tuple, text: str) -> None:
    """Two worlds that differ only in the outcome of lung's one ECOG 3 patient release the same:
    their group is withheld (BY ph_ecog), and a WHERE that keeps them with few others too."""
    _, cons, schema = lung
    frames = lung_by_site()
    (site,) = [name for name, f in frames.items() if (f.ph_ecog == 3).any()]
    other = frames[site].copy()
    lone = other.ph_ecog == 3
    other.loc[lone, "status"] = 3 - other.loc[lone, "status"]  # 1 <-> 2
    flipped = {**frames, site: other}
    first, second = run(text, cons, schema), run(text, connect(flipped), schema)
    pd.testing.assert_frame_equal(first, second, check_exact=False, rtol=1e-8)  # quotients: random 1e-9 rounding
    assert not first["released"].iloc[-1]  # the group holding the patient (ECOG 3, or the WHERE set)


def test_a_term_isolating_a_patient_is_refused(lung: tuple) -> None:
    _, cons, schema = lung
    with pytest.raises(ModelRefused, match="term_isolation"):
        run("VALIDATE COX time, status = 2 ~ 0.017*age + 5*C(ph_ecog)[3] FROM lung", cons, schema)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("VALIDATE COX time ~ 0.1*age FROM lung", QuerySyntaxError),
        ("VALIDATE COX time, status = 2 ~ 0.1*age FROM lung THRESHOLD 0.5", UnsupportedQuery),
        ("VALIDATE COX ph_karno, status = 2 ~ 0.1*age FROM lung", UnsupportedQuery),  # no time grid
        ("VALIDATE COX time, status = 2 ~ 0.1*I(age / 10) FROM lung", UnsupportedQuery),  # no bounds: GRID
        ("VALIDATE COX time, status = 2 ~ 0.1*age FROM lung GRID -5 TO 5 STEP 0.0001", UnsupportedQuery),
        ("VALIDATE POISSON y ~ 0.1*age FROM lung", UnsupportedQuery),
    ],
)
def test_bad_statements_are_refused(lung: tuple, text: str, error: type[QueryError]) -> None:
    _, _, schema = lung
    with pytest.raises(error):
        compile_query(text, schema, DisclosureRules())


def test_explain_lists_every_reveal_point(lung: tuple) -> None:
    _, _, schema = lung
    plan = compile_query(f"VALIDATE COX time, status = 2 ~ {SCORE} FROM lung BY sex", schema, DisclosureRules())
    kind = kind_of(plan)
    assert kind is not None
    text = kind.explain(plan)
    for name in ("local_failed", "released", "dropped_small", "term_isolation", "n", "concordance", "dropped"):
        assert f"] {name}:" in text
    assert "1101 bins" in text and "GROUP BY gi, cell, rbin" in text


def test_tied_times_and_scores_follow_lifelines() -> None:
    """Many ties, each of lifelines' rules exercised: two events at one time (not comparable),
    an event and a censoring at one time (comparable: the censoring counts as later), tied
    scores (1/2), a censored row before an event (not comparable). Distinct scores lie a whole
    unit apart, more than a risk bin: C is exact."""
    rng = np.random.default_rng(7)
    n = 600
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "t": rng.integers(1, 25, n).astype(float),
            "dead": rng.integers(0, 2, n),
            "x": rng.integers(0, 6, n),
            "z": rng.integers(0, 3, n),
        }
    )
    cons, _ = split(frame, "cohort")
    grids = {"cohort.t": (0, 30, 1), "cohort.x": (0, 5, 1)}
    schema = schema_from_duckdb(cons["site0"], {"cohort.z": [0, 1, 2]}, grids, {"cohort": "id"})
    out = run("VALIDATE COX t, dead ~ 1.0*x - 2.0*C(z)[1] FROM cohort", cons, schema)
    score = frame.x - 2.0 * (frame.z == 1)
    assert out.loc["all", "concordance"] == pytest.approx(concordance_index(frame.t, -score, frame.dead), abs=1e-8)


def test_no_comparable_pair_gives_zero_where_lifelines_raises() -> None:
    """Every censoring before every event, and the events at one time: no pair is comparable."""
    frame = pd.DataFrame(
        {"id": np.arange(20), "t": [*range(1, 11), *[20] * 10], "dead": [0] * 10 + [1] * 10, "x": [*range(1, 11)] * 2}
    )
    cons, _ = split(frame, "cohort")
    schema = schema_from_duckdb(cons["site0"], None, {"cohort.t": (0, 30, 1), "cohort.x": (0, 10, 1)}, {"cohort": "id"})
    out = run("VALIDATE COX t, dead ~ 0.5*x FROM cohort", cons, schema)
    assert out.loc["all", "concordance"] == 0.0 and out.loc["all", "released"]
    with pytest.raises(ZeroDivisionError):
        concordance_index(frame.t, -frame.x, frame.dead)
