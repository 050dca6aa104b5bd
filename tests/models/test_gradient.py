"""GRADIENT LOGISTIC in one process against statsmodels' Logit score and Hessian on the pooled rows."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from mpc_jupyter.results import model_line
from site_agent.errors import ModelRefused, UnsupportedQuery
from site_agent.models.statement import execute
from site_agent.query import DisclosureRules, compile_query

from .conftest import split
from .test_validate import _lung


def test_spector_score_and_hessian_equal_statsmodels() -> None:
    data = sm.datasets.spector.load_pandas().data
    cons, schema = split(data, "spector")
    at = [-4.0, 1.1]  # 11 events: one term besides the intercept passes events per term (10)
    text = f"GRADIENT LOGISTIC GRADE ~ GPA FROM spector AT ({', '.join(map(str, at))}) WITH HESSIAN"
    out = execute(compile_query(text, schema, DisclosureRules()), cons)
    ref = sm.Logit(data.GRADE, sm.add_constant(data[["GPA"]]))
    assert np.allclose(out["score"], ref.score(np.array(at)), rtol=1e-7, atol=1e-6)
    assert np.allclose(out[list(out.index)].to_numpy(), ref.hessian(np.array(at)), rtol=1e-7, atol=1e-5)
    assert out.attrs["n"] == 32
    assert model_line(out) == "GRADIENT LOGISTIC · n = 32 · score at the given coefficients"


def test_lung_with_a_categorical_term_and_where() -> None:
    lung = _lung()
    cons, schema = split(lung, "lung", {"lung.sex": [1, 2], "lung.ph_ecog": [0, 1, 2, 3]}, "id")
    text = (
        "GRADIENT LOGISTIC status = 2 ~ C(sex) + age FROM lung WHERE ph_karno >= 60 AT (-0.5, -0.8, 0.02) WITH HESSIAN"
    )
    out = execute(compile_query(text, schema, DisclosureRules()), cons)
    frame = lung[lung.ph_karno >= 60].assign(dead=lambda d: (d.status == 2) * 1.0)
    ref = smf.logit("dead ~ C(sex) + age", frame)
    assert list(out.index) == list(ref.exog_names)
    assert np.allclose(out["score"], ref.score(np.array([-0.5, -0.8, 0.02])), rtol=1e-7, atol=1e-6)
    assert np.allclose(out[list(out.index)].to_numpy(), ref.hessian(np.array([-0.5, -0.8, 0.02])), rtol=1e-7)


def test_no_hessian_unless_asked() -> None:
    data = sm.datasets.spector.load_pandas().data
    cons, schema = split(data, "spector")
    out = execute(
        compile_query("GRADIENT LOGISTIC GRADE ~ GPA FROM spector AT (0, 0)", schema, DisclosureRules()), cons
    )
    assert list(out.columns) == ["at", "score"]
    ref = sm.Logit(data.GRADE, sm.add_constant(data[["GPA"]]))
    assert np.allclose(out["score"], ref.score(np.zeros(2)), rtol=1e-7, atol=1e-6)


def test_coefficients_that_push_p_to_0_or_1_are_refused() -> None:
    """A huge coefficient makes p 0 or 1 on either side of a hyperplane: the score is then a sum
    over the rows the analyst cut off (possibly one patient)."""
    lung = _lung()
    cons, schema = split(lung, "lung", {"lung.sex": [1, 2], "lung.ph_ecog": [0, 1, 2, 3]}, "id")
    text = "GRADIENT LOGISTIC status = 2 ~ age + ph_karno FROM lung AT (-800, 10, 0)"
    with pytest.raises(ModelRefused, match="gradient_eta_bound"):
        execute(compile_query(text, schema, DisclosureRules()), cons)


def test_a_term_isolating_few_patients_is_refused() -> None:
    """I(age > 80) is 1 for 3 patients (of 227): its score entry would be their residuals."""
    lung = _lung()
    assert 0 < (lung.age > 80).sum() < 5
    cons, schema = split(lung, "lung", {"lung.sex": [1, 2], "lung.ph_ecog": [0, 1, 2, 3]}, "id")
    text = "GRADIENT LOGISTIC status = 2 ~ age + I(age > 80) FROM lung AT (0.5, 0.0, 0.0)"
    with pytest.raises(ModelRefused, match="term_isolation"):
        execute(compile_query(text, schema, DisclosureRules()), cons)


def test_at_must_give_every_coefficient() -> None:
    data = sm.datasets.spector.load_pandas().data
    _, schema = split(data, "spector")
    with pytest.raises(UnsupportedQuery):
        compile_query("GRADIENT LOGISTIC GRADE ~ GPA FROM spector AT (1, 2, 3)", schema, DisclosureRules())
