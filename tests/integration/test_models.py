"""Models through three real agents (TLS websockets, DuckDB), against statsmodels on the pooled
lung data; refusals by the model rules; ``--explain``.

Uses the session's ``lung`` consortium (central does not expose meal_cal, so no model here reads
it; the schema declares sex and ph_ecog domains for C())."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from mpc_jupyter.client import QueryFailed

from ..lung import SITES
from ..models.conftest import in_se, relative
from .conftest import Running


def test_linear_equals_statsmodels(lung: Running, pooled: pd.DataFrame) -> None:
    ours = lung.client.query("LINEAR wt_loss ~ age + C(sex) + ph_karno FROM lung")
    ref = smf.ols("wt_loss ~ age + C(sex) + ph_karno", pooled).fit()
    assert relative(ours["coef"], ref.params) < 1e-8
    assert in_se(ours, ref.params, ref.bse) < 1e-9
    assert relative(ours["std err"], ref.bse) < 1e-8
    assert ours.attrs["r_squared"] == pytest.approx(ref.rsquared, rel=1e-7)
    assert ours.attrs["n"] == ref.nobs and ours.attrs["n_dropped"] == len(pooled) - ref.nobs
    assert len(ours.attrs["receipts"]) == 3
    for site in SITES:  # the audit log names the declared reveals, never values
        entry = lung.audit(site)[-1]
        assert entry["decision"] == "accepted"
        assert {r["name"] for r in entry["reveals"]} >= {"coef", "se", "iterate"}


def test_logistic_equals_statsmodels(lung: Running, pooled: pd.DataFrame) -> None:
    ours = lung.client.query("LOGISTIC status = 2 ~ age + C(sex) + ph_ecog FROM lung WHERE ph_karno >= 60")
    frame = pooled[pooled.ph_karno >= 60].assign(dead=lambda d: (d.status == 2) * 1.0)
    ref = smf.logit("dead ~ age + C(sex) + ph_ecog", frame).fit(disp=0, tol=1e-12)
    assert relative(ours["coef"], ref.params) < 1e-6
    assert relative(ours["std err"], ref.bse) < 1e-6
    assert ours.attrs["llf"] == pytest.approx(ref.llf, rel=1e-7)
    assert np.allclose(ours["odds ratio"], np.exp(ref.params.reindex(ours.index)), rtol=1e-6)


def test_poisson_rate_equals_statsmodels(lung: Running, pooled: pd.DataFrame) -> None:
    ours = lung.client.query("POISSON status = 2 ~ age + C(sex) FROM lung OFFSET log(time)")
    frame = pooled.assign(dead=(pooled.status == 2) * 1.0)
    ref = smf.glm("dead ~ age + C(sex)", frame, family=sm.families.Poisson(), offset=np.log(frame.time)).fit(tol=1e-12)
    assert relative(ours["coef"], ref.params) < 1e-6
    assert relative(ours["std err"], ref.bse) < 1e-6
    assert ours.attrs["deviance"] == pytest.approx(ref.deviance, rel=1e-7)


def test_explain_names_the_reveal_points(lung: Running) -> None:
    text = lung.client.explain("LOGISTIC status = 2 ~ age + C(sex) FROM lung")
    assert "Newton" in text and "[committee] iterate:" in text and "[analyst] se:" in text


def test_a_level_held_by_one_patient_is_refused(lung: Running, pooled: pd.DataFrame) -> None:
    """The attacker's arithmetic: ph_ecog = 3 is one patient. With C(ph_ecog) the model fits that
    patient exactly, so intercept + beta_age age + beta_[T.3] is their weight loss. The committee
    refuses before opening anything, naming the rule; statsmodels on the pooled rows shows the
    attack would have worked."""
    lone = pooled[pooled.ph_ecog == 3]
    assert len(lone) == 1
    text = "LINEAR wt_loss ~ age + C(ph_ecog) FROM lung"
    before = lung.audit_counts()
    with pytest.raises(QueryFailed) as err:
        lung.client.query(text)
    assert err.value.rule == "min_cell_size"
    assert str(err.value).count("\n") == 0 and "min_cell_size" in str(err.value)
    for site in SITES:
        new = lung.wait_audit(site, before[site])
        assert new[-1]["decision"] == "refused" and new[-1]["reveals"] == []
    ref = smf.ols("wt_loss ~ age + C(ph_ecog)", pooled).fit()
    derived = ref.params["Intercept"] + ref.params["age"] * lone.age.iloc[0] + ref.params["C(ph_ecog)[T.3.0]"]
    assert derived == pytest.approx(lone.wt_loss.iloc[0], abs=1e-6)  # what the refusal withheld


def test_a_where_that_isolates_a_patient_is_refused(lung: Running, pooled: pd.DataFrame) -> None:
    """Three patients by WHERE: a line through them would give away their values."""
    with pytest.raises(QueryFailed) as err:
        lung.client.query("LINEAR wt_loss ~ age FROM lung WHERE ph_karno = 50 AND sex = 2")
    assert err.value.rule in ("min_cell_size", "model_residual_df")
