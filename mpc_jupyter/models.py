"""Models to validate at the sites: a fit of this consortium or another as VALIDATE's linear
predictor (:func:`predictor`), and a scikit-learn tree ensemble as the plain JSON of
``VALIDATE LOGISTIC y ~ TREES(:model)`` (docs/models.md, "Tree ensembles")::

    model = GradientBoostingClassifier(max_depth=2).fit(x, y)
    frame = consortium.query(
        "VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung BY sex",
        params={"model": export_sklearn(model, ["age", "ph_ecog", "wt_loss"])},
    )

The format (read and checked by ``site_agent/models/trees.py``)::

    {"format": "sklearn", "estimator": "GradientBoostingClassifier" | "RandomForestClassifier"
     | "DecisionTreeClassifier", "features": [column, ...], "init": <raw score before the
     trees, boosting only>, "learning_rate": <boosting only>,
     "trees": [{"feature": [...], "threshold": [...], "left": [...], "right": [...],
                "value": [...]}, ...]}

per tree sklearn's ``tree_`` arrays (``left``/``right`` are ``children_left``/``right``, -1
at a leaf); ``value`` is the leaf's output: the regression value of a boosting stage, the share
of class 1 at a leaf of a forest's (or the single) tree. scikit-learn is not imported here: the
model is read through its attributes.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["export_sklearn", "predictor"]

VALIDATED = ("LOGISTIC", "COX")
"""The fits whose linear predictor VALIDATE takes (VALIDATE LOGISTIC, VALIDATE COX)."""
_FACTOR = re.compile(r"[A-Za-z_]\w*|I\([\w\s.+\-*/]*\)|C\([A-Za-z_]\w*\)\[T\.(?:[\w.\-]+)\]")


def predictor(fit: pd.DataFrame) -> str:
    """A stored LOGISTIC or COX result as the linear predictor VALIDATE takes, so a model fitted
    on one consortium's (or an earlier query's) rows is evaluated on these::

        fit = consortium.query("LOGISTIC status = 2 ~ age + C(sex) FROM lung")
        consortium.query(f"VALIDATE LOGISTIC status = 2 ~ {predictor(fit)} FROM lung BY sex")

    (in a ``%%mpc`` cell, ``~ :fit`` binds it the same way). Each coefficient is written with
    every digit of its float (``repr``); ``C(col)[T.level]`` becomes ``C(col)[level]``, an
    interaction ``a:b`` the product ``a*b``, the intercept the constant term. A term name that is
    not one of the formula language's (which a fit never has) is refused, so no text other than
    a formula reaches the query."""
    kind = fit.attrs.get("model")
    if kind not in VALIDATED or "coef" not in fit.columns:
        raise ValueError(f"a LOGISTIC or COX result is needed for a linear predictor, not {kind or 'this frame'!r}")
    terms = []
    for name, coef in fit["coef"].items():
        value = float(coef)
        if not math.isfinite(value):
            raise ValueError(f"the coefficient of {name!r} is not a finite number")
        sign, magnitude = ("-" if value < 0 else "+"), repr(abs(value))
        if name == "Intercept":
            terms.append(f"{sign} {magnitude}")
            continue
        factors = str(name).split(":")
        if not all(_FACTOR.fullmatch(f) for f in factors):
            raise ValueError(f"{name!r} is not a term of the formula language")
        product = "*".join(re.sub(r"\[T\.(.*)\]$", r"[\1]", f) for f in factors)
        terms.append(f"{sign} {magnitude}*{product}")
    if not terms:
        raise ValueError("the fit has no terms")
    text = " ".join(terms)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def _tree(tree: Any, leaf_values: np.ndarray) -> dict[str, list[Any]]:
    t = tree.tree_
    return {
        "feature": [int(v) for v in t.feature],
        "threshold": [float(v) for v in t.threshold],
        "left": [int(v) for v in t.children_left],
        "right": [int(v) for v in t.children_right],
        "value": [float(v) for v in leaf_values],
    }


def _class_one_share(tree: Any) -> np.ndarray:
    """Per node, the (weighted) share of class 1: sklearn's ``predict_proba`` at a leaf."""
    value = np.asarray(tree.tree_.value, dtype=np.float64)[:, 0, :]
    total = value.sum(axis=1)
    share: np.ndarray = np.divide(value[:, 1], total, out=np.zeros_like(total), where=total > 0)
    return share


def export_sklearn(model: Any, feature_names: list[str]) -> dict[str, Any]:
    """The JSON of a fitted binary ``GradientBoostingClassifier``, ``RandomForestClassifier``
    or ``DecisionTreeClassifier`` over ``feature_names`` (the table's columns, in the order of
    the model's training matrix). The positive class is ``model.classes_[1]``."""
    kind = type(model).__name__
    names = [str(f) for f in feature_names]
    if len(names) != int(getattr(model, "n_features_in_", -1)):
        raise ValueError(f"the model was fitted on {getattr(model, 'n_features_in_', '?')} features, not {len(names)}")
    if len(getattr(model, "classes_", ())) != 2:
        raise ValueError("export_sklearn takes a binary classifier (two classes)")
    trained = getattr(model, "feature_names_in_", None)
    if trained is not None and [str(f).lower() for f in trained] != [f.lower() for f in names]:
        raise ValueError(f"the model was fitted on the columns {list(trained)}, not {names}")
    out: dict[str, Any] = {"format": "sklearn", "estimator": kind, "features": names}
    if kind == "GradientBoostingClassifier":
        if getattr(model, "loss", "log_loss") not in ("log_loss", "deviance"):
            raise ValueError(f"a GradientBoostingClassifier with loss={model.loss!r}: only log_loss is exported")
        init = model.init_
        if not (init == "zero" or type(init).__name__ == "DummyClassifier"):
            raise ValueError("a GradientBoostingClassifier with a custom init estimator cannot be exported")
        raw = np.asarray(model._raw_predict_init(np.zeros((1, len(names)))), dtype=np.float64)
        out["init"] = float(raw.ravel()[0])
        out["learning_rate"] = float(model.learning_rate)
        out["trees"] = [_tree(t, np.asarray(t.tree_.value)[:, 0, 0]) for t in model.estimators_[:, 0]]
    elif kind == "RandomForestClassifier":
        out["trees"] = [_tree(t, _class_one_share(t)) for t in model.estimators_]
    elif kind == "DecisionTreeClassifier":
        out["trees"] = [_tree(model, _class_one_share(model))]
    else:
        raise ValueError(f"export_sklearn takes GradientBoosting-, RandomForest- or DecisionTreeClassifier, not {kind}")
    return out
