"""VALIDATE LOGISTIC ... ~ TREES(:model): tree ensembles scored at the sites, in one process.

References (independent of our code): scikit-learn's own ``predict_proba`` /
``decision_function`` on the pooled rows, then ``sklearn.metrics`` (roc_auc_score,
brier_score_loss, confusion_matrix; scikit-learn is a test dependency, these tests skip without
it), scipy's Mann-Whitney U on the grid-rounded scores (the AUC
VALIDATE documents: ties within a grid step count 1/2), statsmodels' Logit of y on the score
for the calibration intercept and slope. The XGBoost path is checked against margins computed
by hand from a two-tree dump (xgboost is not a dependency)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.stats import mannwhitneyu

from mpc_jupyter.models import export_sklearn
from site_agent.errors import ModelRefused, PolicyRefusal, QueryError, UnsupportedQuery
from site_agent.models.statement import execute
from site_agent.models.validate import explain_validate
from site_agent.query import DisclosureRules, compile_query

from .conftest import split
from .test_validate import _lung


def _sklearn(module: str) -> Any:
    """A scikit-learn module (a test dependency): it trains the models and computes the metrics;
    the XGBoost and refusal tests need none of it."""
    return pytest.importorskip(module)


FEATURES = ["age", "sex", "ph_ecog", "wt_loss"]
LO, STEP = -10.0, 1e-4  # the default grid


@pytest.fixture(scope="module")
def lung_sites() -> tuple[pd.DataFrame, dict, object]:
    lung = _lung()
    cons, schema = split(lung, "lung", {"lung.sex": [1, 2], "lung.ph_ecog": [0, 1, 2, 3]}, "id")
    return lung, cons, schema


def _complete(lung: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    rows = lung.dropna(subset=FEATURES)
    return rows, (rows.status == 2).to_numpy(int)


@pytest.fixture(scope="module")
def boosting(lung_sites) -> Any:
    rows, y = _complete(lung_sites[0])
    model = _sklearn("sklearn.ensemble").GradientBoostingClassifier(
        n_estimators=25, max_depth=2, min_samples_leaf=25, random_state=0
    )
    return model.fit(rows[FEATURES].to_numpy(), y)


@pytest.fixture(scope="module")
def forest(lung_sites) -> Any:
    rows, y = _complete(lung_sites[0])
    return _sklearn("sklearn.ensemble").RandomForestClassifier(
        n_estimators=15, max_depth=3, min_samples_leaf=30, bootstrap=False, max_features=2, random_state=0
    ).fit(rows[FEATURES].to_numpy(), y)


def _run(text: str, model: dict, schema, cons, rules: DisclosureRules | None = None) -> pd.DataFrame:
    plan = compile_query(text, schema, rules or DisclosureRules(), params={"model": model})
    return execute(plan, cons)


def _check(row: pd.Series, y: np.ndarray, p: np.ndarray, eta: np.ndarray, threshold: float = 0.5) -> None:
    """VALIDATE's row against the references on the same pooled rows."""
    metrics = _sklearn("sklearn.metrics")
    grid = np.floor((np.clip(eta, LO, -LO) - LO) / STEP + 0.5)
    u = mannwhitneyu(grid[y == 1], grid[y == 0]).statistic / (y.sum() * (1 - y).sum())
    assert row["auc"] == pytest.approx(u, abs=1e-7)
    # sklearn's AUC of the float scores: equal up to half the share of pairs closer than a step
    pos, neg = eta[y == 1], eta[y == 0]
    near = np.abs(pos[:, None] - neg[None, :])
    bound = 0.5 * np.sum((near < STEP) & (near > 0)) / near.size
    assert abs(row["auc"] - metrics.roc_auc_score(y, p)) <= bound + 1e-7
    assert row["brier"] == pytest.approx(metrics.brier_score_loss(y, p), abs=1e-7)
    assert row["citl"] == pytest.approx(y.mean() - p.mean(), abs=1e-7)
    assert (row["n"], row["events"]) == (len(y), y.sum())
    tn, fp, fn, tp = metrics.confusion_matrix(y, p >= threshold, labels=[0, 1]).ravel()
    cells = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    if any(0 < v < 5 for v in cells.values()):
        assert all(np.isnan(row[c]) for c in cells)
    else:
        assert {c: row[c] for c in cells} == cells
    cal = sm.Logit(y, sm.add_constant(eta)).fit(disp=0, tol=1e-12).params
    assert row["cal_intercept"] == pytest.approx(cal[0], abs=1e-5)
    assert row["cal_slope"] == pytest.approx(cal[1], abs=1e-5)


def test_gradient_boosting_equals_sklearn(lung_sites, boosting) -> None:
    lung, cons, schema = lung_sites
    model = export_sklearn(boosting, FEATURES)
    out = _run("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", model, schema, cons)
    rows, y = _complete(lung)
    x = rows[FEATURES].to_numpy()
    _check(out.loc["all"], y, boosting.predict_proba(x)[:, 1], boosting.decision_function(x))
    assert out.loc["all", "n_dropped"] == len(lung) - len(rows)  # a NULL feature: dropped and counted
    assert out.attrs["trees"]["estimator"] == "GradientBoostingClassifier" and out.attrs["trees"]["trees"] == 25


def test_gradient_boosting_by_sex_with_where_and_threshold(lung_sites, boosting) -> None:
    lung, cons, schema = lung_sites
    text = "VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung WHERE age > 50 BY sex THRESHOLD 0.7"
    out = _run(text, export_sklearn(boosting, FEATURES), schema, cons)
    rows, y = _complete(lung)
    for sex in (1, 2):
        mask = ((rows.age > 50) & (rows.sex == sex)).to_numpy()
        x = rows[FEATURES].to_numpy()[mask]
        _check(out.loc[sex], y[mask], boosting.predict_proba(x)[:, 1], boosting.decision_function(x), 0.7)


def test_random_forest_equals_sklearn(lung_sites, forest) -> None:
    lung, cons, schema = lung_sites
    out = _run("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung BY sex", export_sklearn(forest, FEATURES),
               schema, cons)
    rows, y = _complete(lung)
    for sex in (1, 2):
        mask = (rows.sex == sex).to_numpy()
        p = forest.predict_proba(rows[FEATURES].to_numpy()[mask])[:, 1]
        _check(out.loc[sex], y[mask], p, np.log(p / (1 - p)))


def test_a_leaf_of_few_patients_is_refused(lung_sites) -> None:
    """A leaf is a term of the score: a tree whose leaf holds 1..k-1 patients singles them out."""
    lung, cons, schema = lung_sites
    rows, y = _complete(lung)
    tree = _sklearn("sklearn.tree").DecisionTreeClassifier(max_depth=6, random_state=0)
    tree.fit(rows[FEATURES].to_numpy(), y)
    with pytest.raises(ModelRefused) as err:
        _run("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", export_sklearn(tree, FEATURES), schema, cons)
    assert err.value.rule == "term_isolation"


def test_explain_and_plan_digest_hold_the_model(lung_sites, boosting) -> None:
    _, _, schema = lung_sites
    text = "VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung"
    model = export_sklearn(boosting, FEATURES)
    plan = compile_query(text, schema, DisclosureRules(), params={"model": model})
    words = explain_validate(plan)
    assert "GradientBoostingClassifier tree ensemble" in words and "[rows]" in words
    other = json.loads(json.dumps(model))
    leaf = other["trees"][3]["left"].index(-1)
    other["trees"][3]["value"][leaf] += 0.5
    assert compile_query(text, schema, DisclosureRules(), params={"model": other}).digest() != plan.digest()


# -- XGBoost's JSON dump ------------------------------------------------------------------------
def _xgb_trees() -> list[str]:
    """Two trees as Booster.get_dump(dump_format="json") writes them (f0 = age, f1 = wt_loss);
    x < split_condition goes to yes, a NULL to missing."""
    t0 = {"nodeid": 0, "depth": 0, "split": "f0", "split_condition": 63.5, "yes": 1, "no": 2, "missing": 2,
          "children": [{"nodeid": 1, "leaf": 0.4},
                       {"nodeid": 2, "depth": 1, "split": "f1", "split_condition": 5.0, "yes": 3, "no": 4,
                        "missing": 3, "children": [{"nodeid": 3, "leaf": -0.2}, {"nodeid": 4, "leaf": 0.7}]}]}
    t1 = {"nodeid": 0, "depth": 0, "split": "f1", "split_condition": 10.0, "yes": 1, "no": 2, "missing": 1,
          "children": [{"nodeid": 1, "leaf": 0.15}, {"nodeid": 2, "leaf": -0.25}]}
    return [json.dumps(t0), json.dumps(t1)]


def _xgb_margin(age: float, wt_loss: float, base_score: float) -> float:
    """The two trees above, by hand."""
    low = np.isnan(wt_loss) or wt_loss < 5.0  # a NULL takes the missing branch: yes
    first = 0.4 if age < 63.5 else (-0.2 if low else 0.7)
    second = 0.15 if (np.isnan(wt_loss) or wt_loss < 10.0) else -0.25
    return np.log(base_score / (1 - base_score)) + first + second


def test_xgboost_dump_equals_hand_margins(lung_sites) -> None:
    lung, cons, schema = lung_sites
    model = {"format": "xgboost", "base_score": 0.6, "features": ["age", "wt_loss"], "trees": _xgb_trees()}
    out = _run("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung BY sex", model, schema, cons)
    assert lung.wt_loss.isna().sum() > 0  # NULL wt_loss takes the missing branch: no row dropped
    for sex in (1, 2):
        rows = lung[lung.sex == sex]
        y = (rows.status == 2).to_numpy(int)
        eta = np.array([_xgb_margin(a, w, 0.6) for a, w in zip(rows.age, rows.wt_loss, strict=True)])
        p = 1.0 / (1.0 + np.exp(-eta))
        auc = mannwhitneyu(eta[y == 1], eta[y == 0]).statistic / (y.sum() * (1 - y).sum())  # six distinct scores
        assert out.loc[sex, "auc"] == pytest.approx(auc, abs=1e-9)
        assert out.loc[sex, "brier"] == pytest.approx(np.mean((y - p) ** 2), abs=1e-7)
        assert out.loc[sex, "n"] == len(rows)


def test_a_real_xgboost_dump_equals_its_margins(lung_sites) -> None:
    """With xgboost installed (not a dependency): a booster trained on lung with NULLs in
    wt_loss and meal_cal, dumped as JSON; VALIDATE's AUC and Brier equal those of the booster's
    own predictions (margins agree to float32 precision, 1e-6)."""
    xgb = pytest.importorskip("xgboost")
    lung, cons, schema = lung_sites
    features = ["age", "sex", "ph_ecog", "wt_loss", "meal_cal"]
    x, y = lung[features].to_numpy(float), (lung.status == 2).to_numpy(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "eta": 0.3, "min_child_weight": 10},
                        xgb.DMatrix(x, label=y), num_boost_round=10)
    config = json.loads(booster.save_config())
    base = float(str(config["learner"]["learner_model_param"]["base_score"]).strip("[]"))
    model = {"format": "xgboost", "base_score": base, "features": features,
             "trees": booster.get_dump(dump_format="json")}
    out = _run("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung WITHOUT CALIBRATION", model, schema, cons)
    p = booster.predict(xgb.DMatrix(x))
    eta = booster.predict(xgb.DMatrix(x), output_margin=True)
    grid = np.floor((eta - LO) / STEP + 0.5)
    assert out.loc["all", "auc"] == pytest.approx(
        mannwhitneyu(grid[y == 1], grid[y == 0]).statistic / (y.sum() * (1 - y).sum()), abs=1e-7
    )
    assert out.loc["all", "brier"] == pytest.approx(np.mean((y - p) ** 2), abs=1e-6)
    assert out.loc["all", "n"] == len(y)  # NULLs take the missing branches


def test_xgboost_split_names_are_columns_without_features(lung_sites) -> None:
    lung, cons, schema = lung_sites
    tree = {"nodeid": 0, "split": "age", "split_condition": 60, "yes": 1, "no": 2, "missing": 1,
            "children": [{"nodeid": 1, "leaf": -0.3}, {"nodeid": 2, "leaf": 0.3}]}
    out = _run("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung WITHOUT CALIBRATION",
               {"format": "xgboost", "base_score": 0.5, "trees": [tree]}, schema, cons)
    y = (lung.status == 2).to_numpy(int)
    score = (lung.age >= 60).to_numpy(float)
    auc = mannwhitneyu(score[y == 1], score[y == 0]).statistic / (y.sum() * (1 - y).sum())
    assert out.loc["all", "auc"] == pytest.approx(auc, abs=1e-9)


# -- refusals -------------------------------------------------------------------------------
def _node_tree(**changes) -> dict:
    tree = {"feature": [0, -2, -2], "threshold": [60.0, -2.0, -2.0], "left": [1, -1, -1], "right": [2, -1, -1],
            "value": [0.0, 0.3, 0.6]}
    tree.update(changes)
    return tree


def _sk(trees: list, **changes) -> dict:
    model = {"format": "sklearn", "estimator": "RandomForestClassifier", "features": ["age"], "trees": trees}
    model.update(changes)
    return model


BAD = [
    ("{not json", "not valid JSON"),
    ([], "needs its base_score"),
    ({"format": "lightgbm"}, "'format': 'sklearn' or 'xgboost'"),
    (_sk([_node_tree(left=[1, 0, -1], right=[2, -1, -1])]), "one child"),
    (_sk([_node_tree(left=[2, -1, -1], right=[2, -1, -1])]), "do not form one tree"),
    (_sk([_node_tree(left=[0, -1, -1])]), "do not form one tree"),
    (_sk([_node_tree(left=[1, -1, -1], right=[7, -1, -1])]), "out of range"),
    (_sk([{**_node_tree(), "left": [1, 0, -1], "right": [2, 0, -1]}]), "out of range"),
    (_sk([_node_tree(threshold=[float("nan"), -2.0, -2.0])]), "finite"),
    (_sk([_node_tree(feature=[3, -2, -2])]), "feature index is out of range"),
    (_sk([_node_tree(value=[0.0, 0.3, 1.6])]), "probabilities"),
    (_sk([_node_tree()] * 2001), "at most 2,000"),
    (_sk([_node_tree()], features=["age; DROP TABLE lung"]), "not a column name"),
    (_sk([_node_tree()], estimator="SVC"), "'estimator' must be one of"),
    (_sk([_node_tree()], extra=1), "unknown field"),
    ({"format": "xgboost", "base_score": 1.5, "trees": []}, "strictly between 0 and 1"),
    ({"format": "xgboost", "base_score": 0.5, "features": ["age"],
      "trees": [{"nodeid": 0, "split": "f0", "split_condition": 1, "yes": 1, "no": 0, "missing": 1,
                 "children": [{"nodeid": 1, "leaf": 0.1}]}]}, "yes and no must be the node's children"),
]


@pytest.mark.parametrize(("model", "message"), BAD)
def test_malformed_models_are_refused_in_one_line(lung_sites, model, message) -> None:
    _, _, schema = lung_sites
    with pytest.raises(UnsupportedQuery) as err:
        compile_query("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", schema, DisclosureRules(),
                      params={"model": model})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_too_many_nodes_are_refused(lung_sites) -> None:
    _, _, schema = lung_sites
    n = 101  # a heap-ordered tree: node i splits into 2i+1 and 2i+2
    inner = [i < 50 for i in range(n)]
    tree = {
        "feature": [0 if s else -2 for s in inner],
        "threshold": [60.0] * n,
        "left": [2 * i + 1 if s else -1 for i, s in enumerate(inner)],
        "right": [2 * i + 2 if s else -1 for i, s in enumerate(inner)],
        "value": [0.5] * n,
    }
    with pytest.raises(UnsupportedQuery, match="more than 200,000 nodes"):
        compile_query("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", schema, DisclosureRules(),
                      params={"model": _sk([tree] * 1999)})


def test_a_feature_the_policy_does_not_expose_is_refused(lung_sites) -> None:
    _, _, schema = lung_sites
    rules = DisclosureRules(exposed={"lung": frozenset({"status", "sex", "age", "id"})})
    with pytest.raises(PolicyRefusal, match=r"lung\.meal_cal is not exposed"):
        compile_query("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", schema, rules,
                      params={"model": _sk([_node_tree()], features=["meal_cal"])})
    with pytest.raises(QueryError, match="no_such"):
        compile_query("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", schema, DisclosureRules(),
                      params={"model": _sk([_node_tree()], features=["no_such"])})


def test_a_missing_parameter_is_named(lung_sites) -> None:
    _, _, schema = lung_sites
    with pytest.raises(QueryError, match="no parameter 'model'"):
        compile_query("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", schema, DisclosureRules(),
                      params={"other": 1})


def test_a_statement_run_again_scores_the_changed_rows(boosting) -> None:
    """The calibration steps reuse the first step's scores; a later run scores afresh."""
    lung = _lung()
    cons, schema = split(lung, "lung", {"lung.sex": [1, 2], "lung.ph_ecog": [0, 1, 2, 3]}, "id")
    plan = compile_query("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", schema, DisclosureRules(),
                         params={"model": export_sklearn(boosting, FEATURES)})
    execute(plan, cons)
    cons["site0"].execute("DELETE FROM lung WHERE age > 65")
    out = execute(plan, cons)
    first = np.array_split(np.arange(len(lung)), 3)[0]
    kept = lung.drop(index=lung.index[first][lung.age.iloc[first].to_numpy() > 65])
    rows, y = _complete(kept)
    x = rows[FEATURES].to_numpy()
    _check(out.loc["all"], y, boosting.predict_proba(x)[:, 1], boosting.decision_function(x))


def test_leaf_counts_are_distinct_persons(lung_sites) -> None:
    """Two rows of one person at one leaf count once; an incomplete row counts nowhere."""
    from site_agent.models.validate import _leaf_support

    _, _, schema = lung_sites
    tree = {"nodeid": 0, "split": "age", "split_condition": 60, "yes": 1, "no": 2, "missing": 1,
            "children": [{"nodeid": 1, "leaf": -0.3}, {"nodeid": 2, "leaf": 0.3}]}
    plan = compile_query("VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung", schema, DisclosureRules(),
                         params={"model": {"format": "xgboost", "base_score": 0.5, "trees": [tree]}})
    person = np.array([0, 0, 1, 2, 3])
    ok = np.array([True, True, True, True, False])
    leaves = np.array([[1], [1], [1], [2], [2]])  # global ids: nodes 1 and 2 are the leaves
    support = _leaf_support(plan, np.zeros(5, dtype=np.int64), person, ok, leaves)
    assert support.tolist() == [[2, 1, 1, 2]]  # leaf 1: persons 0, 1 (others: 2); leaf 2: person 2 (others: 0, 1)


def test_the_exporter_refuses_what_it_cannot_write(lung_sites) -> None:
    ensemble = _sklearn("sklearn.ensemble")
    rows, y = _complete(lung_sites[0])
    frame = rows[FEATURES]
    model = ensemble.GradientBoostingClassifier(n_estimators=2, max_depth=1).fit(frame, y)
    assert export_sklearn(model, FEATURES)["features"] == FEATURES
    with pytest.raises(ValueError, match="fitted on the columns"):
        export_sklearn(model, ["sex", "age", "ph_ecog", "wt_loss"])
    with pytest.raises(ValueError, match="fitted on 4 features"):
        export_sklearn(model, FEATURES[:3])
    exponential = ensemble.GradientBoostingClassifier(n_estimators=2, max_depth=1, loss="exponential").fit(frame, y)
    with pytest.raises(ValueError, match="only log_loss"):
        export_sklearn(exponential, FEATURES)
    three = ensemble.RandomForestClassifier(n_estimators=2).fit(frame, rows.ph_ecog.astype(int))
    with pytest.raises(ValueError, match="binary"):
        export_sklearn(three, FEATURES)


def test_scores_equal_sklearn_on_continuous_features() -> None:
    """Deep trees over continuous features (float32 comparisons, as sklearn's): the scorer's
    probabilities and scores are sklearn's predict_proba and decision_function."""
    from site_agent.models.trees import read_ensemble, scores

    datasets, ensemble = _sklearn("sklearn.datasets"), _sklearn("sklearn.ensemble")
    x, y = datasets.load_breast_cancer(return_X_y=True)
    names = [f"c{j}" for j in range(x.shape[1])]
    forest = ensemble.RandomForestClassifier(n_estimators=50, random_state=0).fit(x[:400], y[:400])
    eta, p, _ = scores(read_ensemble(export_sklearn(forest, names)), x)
    assert np.max(np.abs(p - forest.predict_proba(x)[:, 1])) < 1e-12
    assert max(forest.estimators_[j].get_depth() for j in range(50)) > 6
    gbm = ensemble.GradientBoostingClassifier(n_estimators=60, max_depth=4, random_state=0).fit(x[:400], y[:400])
    eta, p, _ = scores(read_ensemble(export_sklearn(gbm, names)), x)
    assert np.max(np.abs(eta - gbm.decision_function(x))) < 1e-9
    assert np.max(np.abs(p - gbm.predict_proba(x)[:, 1])) < 1e-12
