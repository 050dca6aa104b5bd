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
    assert ours.attrs["r_squared"] == pytest.approx(ref.rsquared, rel=1e-6)  # 1 - RSS/TSS: a small R² amplifies
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
        lung.second.query(text)  # whose ledger holds no earlier fit: the level's own rule answers
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


def test_validate_equals_scipy_and_statsmodels(lung: Running, pooled: pd.DataFrame) -> None:
    """VALIDATE LOGISTIC by sex through three agents: AUC (scipy's Mann-Whitney U / P N),
    Brier and calibration-in-the-large (pandas), calibration slope (statsmodels Logit)."""
    from scipy.stats import mannwhitneyu

    text = "VALIDATE LOGISTIC status = 2 ~ 1.2 + 0.01*age - 0.5*C(sex)[2] + 0.3*ph_ecog FROM lung BY sex"
    # The second analyst: each group's scored rows (the one man without ECOG dropped) are one
    # person off the men that GROUP BY sex released to the first analyst, which the ledger refuses.
    ours = lung.second.query(text)
    for sex in (1, 2):
        rows = pooled[pooled.sex == sex].dropna(subset=["ph_ecog"])
        y = (rows.status == 2).to_numpy(int)
        eta = (1.2 + 0.01 * rows.age - 0.5 * (rows.sex == 2) + 0.3 * rows.ph_ecog).to_numpy()
        p = 1 / (1 + np.exp(-eta))
        exact = np.round(eta, 9)
        auc = mannwhitneyu(exact[y == 1], exact[y == 0]).statistic / (y.sum() * (1 - y).sum())
        cal = sm.Logit(y, sm.add_constant(eta)).fit(disp=0, tol=1e-12)
        row = ours.loc[sex]
        assert row["released"] and row["n"] == len(y) and row["events"] == y.sum()
        assert row["auc"] == pytest.approx(auc, abs=1e-7)
        assert row["brier"] == pytest.approx(np.mean((y - p) ** 2), rel=1e-7)
        assert row["citl"] == pytest.approx(y.mean() - p.mean(), rel=1e-6)
        assert row["cal_slope"] == pytest.approx(cal.params[1], rel=1e-6)
        assert row["cal_intercept"] == pytest.approx(cal.params[0], rel=1e-6, abs=1e-8)


def test_gradient_equals_statsmodels(lung: Running, pooled: pd.DataFrame) -> None:
    beta = np.array([-0.5, -0.8, 0.02])
    ours = lung.client.query("GRADIENT LOGISTIC status = 2 ~ C(sex) + age FROM lung AT (-0.5, -0.8, 0.02) WITH HESSIAN")
    ref = smf.logit("dead ~ C(sex) + age", pooled.assign(dead=(pooled.status == 2) * 1.0))
    assert np.allclose(ours["score"], ref.score(beta), rtol=1e-7, atol=1e-6)
    assert np.allclose(ours[list(ours.index)], ref.hessian(beta), rtol=1e-7)
    with pytest.raises(QueryFailed, match="gradient_eta_bound"):
        lung.client.query("GRADIENT LOGISTIC status = 2 ~ age FROM lung AT (-800, 10)")


def test_validate_trees_equals_sklearn(lung: Running, pooled: pd.DataFrame) -> None:
    """VALIDATE LOGISTIC ~ TREES(:model) through three agents: the model travels as a signed
    statement parameter; each site scores its rows. AUC, Brier and confusion against
    sklearn.metrics on the model's own predict_proba, calibration against statsmodels."""
    pytest.importorskip("sklearn")
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score

    from mpc_jupyter.models import export_sklearn

    features = ["age", "sex", "ph_ecog"]
    rows = pooled.dropna(subset=features)
    y = (rows.status == 2).to_numpy(int)
    model = GradientBoostingClassifier(n_estimators=10, max_depth=2, min_samples_leaf=30, random_state=0)
    model.fit(rows[features].to_numpy(), y)
    ours = lung.second.query(  # scored rows within 1 to k-1 of an earlier fit's: refused for the first analyst
        "VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", {"model": export_sklearn(model, features)}
    )
    p = model.predict_proba(rows[features].to_numpy())[:, 1]
    eta = model.decision_function(rows[features].to_numpy())
    row = ours.loc["all"]
    assert row["released"] and row["n"] == len(y) and row["events"] == y.sum()
    assert row["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-7)  # few distinct scores: ties as sklearn's
    assert row["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-7)
    tn, fp, fn, tp = confusion_matrix(y, p >= 0.5, labels=[0, 1]).ravel()
    assert [row["tp"], row["fp"], row["fn"], row["tn"]] == [tp, fp, fn, tn]
    cal = sm.Logit(y, sm.add_constant(eta)).fit(disp=0, tol=1e-12)
    assert row["cal_slope"] == pytest.approx(cal.params[1], rel=1e-6)
