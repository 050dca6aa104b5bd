"""The model rules, written as the attacker's arithmetic: what a refused model would have given
away (computed with statsmodels on the pooled rows), and that the committee opened nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from site_agent.errors import LocalStepError, ModelRefused, QueryError
from site_agent.models.statement import execute
from site_agent.query import DisclosureRules, compile_query

from ..lung import lung_by_site
from .conftest import split

LUNG_DOMAINS = {"lung.sex": [1, 2], "lung.ph_ecog": [0, 1, 2, 3]}


@pytest.fixture(scope="module")
def lung() -> tuple[pd.DataFrame, dict, object]:
    pooled = pd.concat(list(lung_by_site().values()), ignore_index=True)
    cons, schema = split(pooled, "lung", LUNG_DOMAINS, "id")
    return pooled, cons, schema


def refusal(text: str, lung: tuple, rules: DisclosureRules | None = None) -> ModelRefused:
    _, cons, schema = lung
    with pytest.raises(ModelRefused) as err:
        execute(compile_query(text, schema, rules or DisclosureRules()), cons)
    assert "\n" not in str(err.value) and "nothing was released" in str(err.value)
    return err.value


def test_where_isolating_two_patients(lung: tuple) -> None:
    """A line through two patients: y_i = b0 + b1 time_i gives both weights lost from their
    follow-up times."""
    pooled, _, _ = lung
    two = pooled[pooled.age < 40]
    assert len(two) == 2
    attack = smf.ols("wt_loss ~ time", two).fit().params
    assert np.allclose(attack["Intercept"] + attack["time"] * two.time, two.wt_loss)  # it would work
    err = refusal("LINEAR wt_loss ~ time FROM lung WHERE age < 40", lung)
    assert err.rule == "min_cell_size" and "fewer than 5 persons" in str(err)


def test_level_with_one_patient(lung: tuple) -> None:
    """ph_ecog = 3 is one patient: their fitted value is their own weight loss."""
    pooled, _, _ = lung
    fit = smf.ols("wt_loss ~ age + C(ph_ecog)", pooled).fit()
    lone = pooled[pooled.ph_ecog == 3].iloc[0]
    derived = fit.params["Intercept"] + fit.params["age"] * lone.age + fit.params["C(ph_ecog)[T.3.0]"]
    assert derived == pytest.approx(lone.wt_loss, abs=1e-6)
    assert refusal("LINEAR wt_loss ~ age + C(ph_ecog) FROM lung", lung).rule == "min_cell_size"
    # the reference level counts too: a rare reference is as small a query set
    assert refusal("LINEAR wt_loss ~ age + C(ph_ecog, Treatment(3)) FROM lung", lung).rule == "min_cell_size"


def test_residual_degrees_of_freedom(lung: tuple) -> None:
    """Twelve patients, four parameters: eight residual df, below ACRO's ten."""
    pooled, _, _ = lung
    assert len(pooled[pooled.age < 48].dropna(subset=["wt_loss", "ph_karno", "meal_cal"])) == 12
    text = "LINEAR wt_loss ~ age + ph_karno + meal_cal FROM lung WHERE age < 48"
    assert refusal(text, lung).rule == "model_residual_df"


def test_events_per_term() -> None:
    data = sm.datasets.spector.load_pandas().data
    data["id"] = np.arange(len(data))
    cons, schema = split(data, "spector", person="id")
    with pytest.raises(ModelRefused) as err:
        execute(compile_query("LOGISTIC GRADE ~ GPA + TUCE + PSI FROM spector", schema, DisclosureRules()), cons)
    assert err.value.rule == "model_events_per_term"  # 11 events, 3 terms: below 10 per term


def test_dropped_rows_below_k_are_withheld(lung: tuple) -> None:
    """One patient lacks ph_karno: their count is withheld; the model is released."""
    pooled, cons, schema = lung
    frame = execute(compile_query("LINEAR time ~ ph_karno FROM lung", schema, DisclosureRules()), cons)
    assert pooled.ph_karno.isna().sum() == 1
    assert frame.attrs["n_dropped"] is None and frame.attrs["n"] == len(pooled) - 1


def test_a_failing_local_step_names_no_site(lung: tuple) -> None:
    """A value beyond the fixed-point range at one site fails the model alike everywhere."""
    _, cons, schema = lung
    plan = compile_query("LINEAR time * 1e12 ~ age FROM lung WHERE inst > 13", schema, DisclosureRules())
    with pytest.raises(LocalStepError) as err:
        execute(plan, cons)
    assert str(err.value) == LocalStepError.MESSAGE


def test_statement_errors_quote_no_generated_sql(lung: tuple) -> None:
    _, _, schema = lung
    with pytest.raises(QueryError) as err:
        compile_query("LINEAR wt_loss ~ age FROM lung WHERE id = 3", schema, DisclosureRules())
    assert "person column" in str(err.value) and "SELECT" not in str(err.value)


def test_model_rules_come_from_the_strictest_site_policy(tmp_path: object, lung: tuple) -> None:
    from pathlib import Path

    from site_agent.policy import combine, load_policy
    from site_agent.query.catalog import rules_from_policy

    _, _, schema = lung
    policies = []
    for site, df, epv in (("a", 12, 5), ("b", 10, 20)):
        path = Path(str(tmp_path)) / f"{site}.toml"
        path.write_text(
            f'[policy]\nanalysts = "*"\nmodel_min_df = {df}\nmodel_events_per_term = {epv}\n'
            '[tables.lung]\ncolumns = "*"\n'
        )
        policies.append(load_policy(path, site))
    rules = rules_from_policy(combine(policies), schema)  # type: ignore[arg-type]
    plan = compile_query("LOGISTIC status = 2 ~ age FROM lung", schema, rules)  # type: ignore[arg-type]
    assert plan.data["params"]["min_residual_df"] == 12
    assert plan.data["params"]["min_events_per_term"] == 20


def test_a_cell_of_two_categorical_terms_with_one_patient() -> None:
    """Every level of a and of b holds 21 or more patients, but one patient alone is (B, Y): the
    interaction's coefficient then fits that patient exactly, so intercept + a + b + a:b is
    their outcome. Every cell of a categorical interaction is a query set of its own."""
    rng = np.random.default_rng(7)
    cells = [("A", "X", 20), ("A", "Y", 20), ("B", "X", 20), ("B", "Y", 1)]
    data = pd.DataFrame([(a, b) for a, b, n in cells for _ in range(n)], columns=["a", "b"]).assign(
        y=lambda d: rng.normal(50, 10, len(d)), id=lambda d: np.arange(len(d))
    )
    lone = data[(data.a == "B") & (data.b == "Y")].iloc[0]
    fit = smf.ols("y ~ C(a) * C(b)", data).fit().params
    derived = fit["Intercept"] + fit["C(a)[T.B]"] + fit["C(b)[T.Y]"] + fit["C(a)[T.B]:C(b)[T.Y]"]
    assert derived == pytest.approx(lone.y)  # what the rule withholds
    cons, schema = split(data, "t", {"t.a": ["A", "B"], "t.b": ["X", "Y"]}, "id")
    with pytest.raises(ModelRefused) as err:
        execute(compile_query("LINEAR y ~ C(a) + C(b) + C(a):C(b) FROM t", schema, DisclosureRules()), cons)
    assert err.value.rule == "min_cell_size"
    # without the interaction every query set holds 21 or more patients: the model is released
    assert execute(compile_query("LINEAR y ~ C(a) + C(b) FROM t", schema, DisclosureRules()), cons).attrs["n"] == 61
