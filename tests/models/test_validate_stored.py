"""VALIDATE of a stored result: a LOGISTIC or COX fit as VALIDATE's linear predictor
(``mpc_jupyter.models.predictor``, and ``~ :fit`` in a cell), checked against what must hold on
the rows the model was fitted on (logistic maximum likelihood with an intercept: calibration in
the large 0 and calibration slope 1; Cox: the fit's own concordance) and against sklearn's AUC of
the fit's own probabilities on the pooled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mpc_jupyter.models import predictor
from mpc_jupyter.params import bind

from .test_validate_cox import lung, run  # noqa: F401  (the module-scoped lung fixture)

FORMULA = "status = 2 ~ age + C(sex) + I(wt_loss / 10) + age:ph_ecog"


def test_a_logistic_fit_validated_on_its_own_rows(lung: tuple) -> None:  # noqa: F811
    pooled, cons, schema = lung
    fit = run(f"LOGISTIC {FORMULA} FROM lung", cons, schema)
    text = predictor(fit)
    assert "C(sex)[2]" in text and "age*ph_ecog" in text and "I(wt_loss / 10)" in text
    out = run(f"VALIDATE LOGISTIC status = 2 ~ {text} FROM lung", cons, schema)
    assert out.loc["all", "citl"] == pytest.approx(0.0, abs=1e-6)  # the score equations of the MLE
    assert out.loc["all", "cal_slope"] == pytest.approx(1.0, abs=1e-5)
    assert out.loc["all", "cal_intercept"] == pytest.approx(0.0, abs=1e-5)
    rows = pooled.dropna(subset=["wt_loss", "ph_ecog"])
    b = fit["coef"]
    eta = (
        b["Intercept"]
        + b["age"] * rows.age
        + b["C(sex)[T.2]"] * (rows.sex == 2)
        + b["I(wt_loss / 10)"] * rows.wt_loss / 10
        + b["age:ph_ecog"] * rows.age * rows.ph_ecog
    )
    assert out.loc["all", "n"] == len(rows) == fit.attrs["n"]
    assert out.loc["all", "auc"] == pytest.approx(roc_auc_score(rows.status == 2, eta), abs=1e-6)


def test_a_cox_fit_gives_its_own_concordance(lung: tuple) -> None:  # noqa: F811
    _, cons, schema = lung
    fit = run("COX time, status = 2 ~ age + C(sex) FROM lung", cons, schema)
    out = run(f"VALIDATE COX time, status = 2 ~ {predictor(fit)} FROM lung", cons, schema)
    assert out.loc["all", "concordance"] == pytest.approx(fit.attrs["concordance"], abs=1e-8)


def test_a_cell_binds_a_fit_after_the_tilde(lung: tuple) -> None:  # noqa: F811
    _, cons, schema = lung
    fit = run("LOGISTIC status = 2 ~ age + C(sex) FROM lung", cons, schema)
    text, bound = bind("VALIDATE LOGISTIC status = 2 ~ :fit FROM lung WHERE age > {a}", {"fit": fit, "a": 50})
    assert text == f"VALIDATE LOGISTIC status = 2 ~ {predictor(fit)} FROM lung WHERE age > 50"
    assert "fit" not in bound


def test_only_fits_and_formula_terms_become_predictors() -> None:
    frame = pd.DataFrame({"coef": [1.0]}, index=["age"])
    with pytest.raises(ValueError, match="LOGISTIC or COX"):
        predictor(frame)
    frame.attrs["model"] = "LOGISTIC"
    assert predictor(frame) == "1.0*age"
    for name in ("age) FROM other --", "C(sex)[T.2] OR 1", "I(age) FROM x; y"):
        bad = pd.DataFrame({"coef": [1.0]}, index=[name])
        bad.attrs["model"] = "COX"
        with pytest.raises(ValueError, match="not a term"):
            predictor(bad)
    nan = pd.DataFrame({"coef": [np.nan]}, index=["age"])
    nan.attrs["model"] = "COX"
    with pytest.raises(ValueError, match="finite"):
        predictor(nan)


def test_the_statement_of_a_fit_round_trips_its_signs() -> None:
    fit = pd.DataFrame({"coef": [-0.5, 0.25, -1e-7]}, index=["Intercept", "age", "C(sex)[T.2]"])
    fit.attrs["model"] = "LOGISTIC"
    assert predictor(fit) == "-0.5 + 0.25*age - 1e-07*C(sex)[2]"
