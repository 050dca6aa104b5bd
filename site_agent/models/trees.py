"""Tree ensembles for VALIDATE LOGISTIC: the analyst's model as public JSON, read, checked and
evaluated on a site's rows in numpy.

Two input formats (docs/models.md, "Tree ensembles"):

* ``{"format": "sklearn", ...}``, written by :func:`mpc_jupyter.models.export_sklearn` from a
  scikit-learn ``GradientBoostingClassifier``, ``RandomForestClassifier`` or
  ``DecisionTreeClassifier``: per tree the arrays of sklearn's ``tree_`` (``feature``,
  ``threshold``, ``left``, ``right``; -1 children at a leaf) and ``value`` (the leaf's output:
  the regression value for gradient boosting, the share of class 1 for a forest or a tree).
  A row goes left when ``x <= threshold``; a row with a NULL feature of the ensemble has no
  score (dropped and counted, as VALIDATE drops a NULL factor). Gradient boosting:
  ``eta = init + learning_rate * sum of leaves``, ``p = 1 / (1 + exp(-eta))``; forest and tree:
  ``p = mean of leaves``, ``eta = log(p / (1 - p))`` (p clipped to [1e-12, 1 - 1e-12]).
* ``{"format": "xgboost", "base_score": b, "trees": <Booster.get_dump(dump_format="json")>,
  "features": [...]}``: XGBoost's JSON dump of a ``binary:logistic`` model (each tree a JSON
  string or object of ``nodeid``, ``split``, ``split_condition``, ``yes``, ``no``, ``missing``,
  ``children``; leaves ``leaf``). A row goes to ``yes`` when ``x < split_condition``, to
  ``missing`` when x is NULL; ``eta = log(b / (1 - b)) + sum of leaves`` (``b``, the model's
  ``base_score``, is a probability as XGBoost's logistic objective keeps it). ``features`` maps
  split names ``f0``, ``f1``, ... to columns; without it the split names are the columns.

Every field is checked (the JSON comes from the analyst): feature names are identifiers (the
statement then validates them as exposed columns), thresholds and leaves finite, child indices
in range, every node reached exactly once from the root (no cycle, no orphan), at most
:data:`MAX_TREES` trees, :data:`MAX_NODES` nodes and depth :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UnsupportedQuery

MAX_TREES = 2_000
MAX_NODES = 200_000
MAX_DEPTH = 64
CLIP = 1e-12
"""A forest's probability is clipped to [CLIP, 1 - CLIP] for its score eta = log(p / (1 - p))."""
_FEATURE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
SKLEARN_ESTIMATORS = ("GradientBoostingClassifier", "RandomForestClassifier", "DecisionTreeClassifier")


def _bad(message: str) -> UnsupportedQuery:
    return UnsupportedQuery(f"TREES: {message}")


@dataclass(frozen=True)
class Ensemble:
    """A checked ensemble, every tree's nodes laid end to end (node ids global): ``feature``
    (index into ``features``; -1 at a leaf), ``threshold``, ``left`` / ``right`` (children; the
    ``strict`` rule sends ``x < t`` left, else ``x <= t``), ``missing`` (the child of a NULL
    feature; -1: the row has no score), ``value`` (leaf outputs) and ``roots``. ``link``:
    ``"logit"`` (eta = base + scale * sum of leaves) or ``"mean"`` (p = mean of leaves)."""

    format: str
    estimator: str
    features: tuple[str, ...]
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int
    strict: bool
    link: str
    base: float
    scale: float

    @property
    def leaves(self) -> np.ndarray:
        """Global ids of the leaves, in order (a leaf is a term of the score: term_isolation)."""
        return np.flatnonzero(self.feature < 0)

    def to_json(self) -> dict[str, Any]:
        """The plan's form (part of its digest); :func:`from_plan` reads it back."""
        return {
            "format": self.format,
            "estimator": self.estimator,
            "features": list(self.features),
            "strict": self.strict,
            "link": self.link,
            "base": self.base,
            "scale": self.scale,
            "depth": self.depth,
            "roots": self.roots.tolist(),
            "nodes": [
                self.feature.tolist(),
                self.threshold.tolist(),
                self.left.tolist(),
                self.right.tolist(),
                self.missing.tolist(),
                self.value.tolist(),
            ],
        }


def from_plan(data: dict[str, Any]) -> Ensemble:
    """The ensemble of a plan (already checked when the plan was compiled)."""
    f, t, lft, rgt, miss, val = data["nodes"]
    ints = {"feature": f, "left": lft, "right": rgt, "missing": miss}
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in ints.items()}
    return Ensemble(
        data["format"],
        data["estimator"],
        tuple(data["features"]),
        threshold=np.asarray(t, dtype=np.float64),
        value=np.asarray(val, dtype=np.float64),
        roots=np.asarray(data["roots"], dtype=np.int64),
        depth=int(data["depth"]),
        strict=bool(data["strict"]),
        link=str(data["link"]),
        base=float(data["base"]),
        scale=float(data["scale"]),
        **arrays,
    )


# -- reading and checking ---------------------------------------------------------------------
def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"{what} must be a finite number")
    return float(value)


def _int_list(tree: dict[str, Any], key: str, size: int, i: int) -> list[int]:
    values = tree.get(key)
    if not isinstance(values, list) or len(values) != size:
        raise _bad(f"tree {i}: '{key}' must be a list of {size} integers")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise _bad(f"tree {i}: '{key}' must hold integers")
    return values


def _float_list(tree: dict[str, Any], key: str, size: int, i: int) -> list[float]:
    values = tree.get(key)
    if not isinstance(values, list) or len(values) != size:
        raise _bad(f"tree {i}: '{key}' must be a list of {size} numbers")
    return [_number(v, f"tree {i}: every '{key}'") for v in values]


def _features(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_NODES:
        raise _bad("'features' must be a non-empty list of column names")
    names = []
    for name in raw:
        if not isinstance(name, str) or not _FEATURE.match(name):
            raise _bad(f"feature {str(name)[:40]!r} is not a column name")
        names.append(name.lower())
    if len(set(names)) != len(names):
        raise _bad("a feature is named twice")
    return tuple(names)


class _Builder:
    """Collects trees (local node ids) into the global arrays, checking each tree's shape."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.roots: list[int] = []
        self.nodes = 0
        self.depth = 0

    def add(self, i: int, feature: list[int], threshold: list[float], left: list[int], right: list[int],
            missing: list[int], value: list[float]) -> None:
        n = len(feature)
        if n == 0:
            raise _bad(f"tree {i} has no node")
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise _bad(f"the ensemble has more than {MAX_NODES:,} nodes")
        f, lt, rt, ms = (np.asarray(a, dtype=np.int64) for a in (feature, left, right, missing))
        leaf = lt == -1
        if np.any(leaf != (rt == -1)):
            raise _bad(f"tree {i}: a node has one child")
        inner = ~leaf
        if np.any((f[inner] < 0) | (f[inner] >= self.n_features)):
            raise _bad(f"tree {i}: a split's feature index is out of range")
        kids = np.concatenate([lt[inner], rt[inner], ms[inner & (ms != -1)]])
        if np.any((kids < 0) | (kids >= n)):
            raise _bad(f"tree {i}: a child index is out of range")
        if np.any(inner & (ms != -1) & (ms != lt) & (ms != rt)):
            raise _bad(f"tree {i}: a 'missing' child must be the node's yes or no child")
        # every node reached exactly once from the root: no cycle, no shared child, no orphan
        parents = np.bincount(np.concatenate([lt[inner], rt[inner]]), minlength=n)
        if parents[0] != 0 or np.any(parents[1:] != 1):
            raise _bad(f"tree {i}: the nodes do not form one tree (a cycle, a shared child or an orphan)")
        depth, level, seen = 0, np.array([0]), 1
        while True:
            level = level[inner[level]]
            if level.size == 0:
                break
            level = np.concatenate([lt[level], rt[level]])
            depth, seen = depth + 1, seen + level.size
            if depth > MAX_DEPTH:
                raise _bad(f"tree {i} is deeper than {MAX_DEPTH}")
        if seen != n:
            raise _bad(f"tree {i}: the nodes do not form one tree (a cycle, a shared child or an orphan)")
        off = self.nodes - n
        self.parts.append(
            (
                np.where(leaf, -1, f),
                np.where(leaf, 0.0, np.asarray(threshold, dtype=np.float64)),
                np.where(leaf, -1, lt + off),
                np.where(leaf, -1, rt + off),
                np.where(leaf | (ms == -1), -1, ms + off),
                np.where(leaf, np.asarray(value, dtype=np.float64), 0.0),
            )
        )
        self.roots.append(off)
        self.depth = max(self.depth, depth)

    def build(self, fmt: str, estimator: str, features: tuple[str, ...], strict: bool, link: str,
              base: float, scale: float) -> Ensemble:
        if not self.parts:
            raise _bad("the ensemble has no tree")
        cols = [np.concatenate([p[j] for p in self.parts]) for j in range(6)]
        return Ensemble(fmt, estimator, features, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5],
                        np.asarray(self.roots, dtype=np.int64), self.depth, strict, link, base, scale)


def _sklearn(raw: dict[str, Any]) -> Ensemble:
    extra = set(raw) - {"format", "estimator", "features", "init", "learning_rate", "trees"}
    if extra:
        raise _bad(f"unknown field {sorted(extra)[0]!r} in a scikit-learn export")
    estimator = raw.get("estimator")
    if estimator not in SKLEARN_ESTIMATORS:
        raise _bad(f"'estimator' must be one of {', '.join(SKLEARN_ESTIMATORS)}")
    features = _features(raw.get("features"))
    trees = raw.get("trees")
    if not isinstance(trees, list):
        raise _bad("'trees' must be a list")
    if len(trees) > MAX_TREES:
        raise _bad(f"the ensemble has {len(trees):,} trees; at most {MAX_TREES:,}")
    if estimator == "DecisionTreeClassifier" and len(trees) != 1:
        raise _bad("a DecisionTreeClassifier export has one tree")
    boosting = estimator == "GradientBoostingClassifier"
    base = _number(raw.get("init"), "'init'") if boosting else 0.0
    scale = _number(raw.get("learning_rate"), "'learning_rate'") if boosting else 1.0
    builder = _Builder(len(features))
    for i, tree in enumerate(trees):
        if not isinstance(tree, dict) or set(tree) != {"feature", "threshold", "left", "right", "value"}:
            raise _bad(f"tree {i} must be an object of feature, threshold, left, right, value")
        n = len(tree["feature"]) if isinstance(tree["feature"], list) else -1
        if n < 1:
            raise _bad(f"tree {i}: 'feature' must be a non-empty list")
        value = _float_list(tree, "value", n, i)
        if not boosting and not all(0.0 <= v <= 1.0 for v in value):
            raise _bad(f"tree {i}: a forest's leaf values are probabilities (0 to 1)")
        left = _int_list(tree, "left", n, i)
        builder.add(
            i, _int_list(tree, "feature", n, i), _float_list(tree, "threshold", n, i), left,
            _int_list(tree, "right", n, i), [-1] * n, value,
        )
    return builder.build("sklearn", estimator, features, False, "logit" if boosting else "mean", base, scale)


_XGB_NODE = {"nodeid", "depth", "split", "split_condition", "yes", "no", "missing", "children", "leaf", "split_type",
             "gain", "cover", "categories_nodes", "categories_segments", "categories_sizes", "categories"}


def _xgb_tree(raw: Any, i: int, index: dict[str, int], builder: _Builder) -> None:
    """One dumped tree: its nested nodes, renumbered 0..n-1 by ``nodeid``."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise _bad(f"tree {i} is not valid JSON") from None
    nodes: dict[int, dict[str, Any]] = {}
    stack = [raw]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or not isinstance(node.get("nodeid"), int) or set(node) - _XGB_NODE:
            raise _bad(f"tree {i}: a node is not an XGBoost dump node")
        if node["nodeid"] in nodes or len(nodes) >= MAX_NODES:
            raise _bad(f"tree {i}: node ids repeat")
        nodes[node["nodeid"]] = node
        kids = node.get("children", [])
        if not isinstance(kids, list):
            raise _bad(f"tree {i}: 'children' must be a list")
        stack.extend(kids)
    ids = sorted(nodes)
    if ids[0] != raw.get("nodeid") or ids != list(range(ids[0], ids[0] + len(ids))):
        raise _bad(f"tree {i}: node ids must run from the root's without gaps")
    first, n = ids[0], len(ids)
    feature, threshold, left, right, missing, value = [0] * n, [0.0] * n, [-1] * n, [-1] * n, [-1] * n, [0.0] * n
    for nid, node in nodes.items():
        j = nid - first
        if "leaf" in node:
            value[j] = _number(node["leaf"], f"tree {i}: a leaf")
            continue
        split = node.get("split")
        if split not in index:
            raise _bad(f"tree {i}: split feature {str(split)[:40]!r} is not among the features")
        if node.get("split_type", "numerical") != "numerical":
            raise _bad(f"tree {i}: only numerical splits are supported")
        feature[j] = index[split]
        threshold[j] = _number(node.get("split_condition"), f"tree {i}: a split_condition")
        links = [node.get(k) for k in ("yes", "no", "missing")]
        given = [v for v in links if isinstance(v, int) and not isinstance(v, bool)]
        if len(given) != 3:
            raise _bad(f"tree {i}: a split needs integer yes, no and missing")
        left[j], right[j], missing[j] = (v - first if v in nodes else -2 for v in given)
        if {links[0], links[1]} != {c.get("nodeid") for c in node.get("children", []) if isinstance(c, dict)}:
            raise _bad(f"tree {i}: yes and no must be the node's children")
    builder.add(i, feature, threshold, left, right, missing, value)


def _xgboost(raw: dict[str, Any]) -> Ensemble:
    extra = set(raw) - {"format", "base_score", "features", "trees"}
    if extra:
        raise _bad(f"unknown field {sorted(extra)[0]!r} in an XGBoost model")
    base_score = _number(raw.get("base_score"), "'base_score' (the model's, a probability)")
    if not 0.0 < base_score < 1.0:
        raise _bad("'base_score' is a probability strictly between 0 and 1")
    trees = raw.get("trees")
    if not isinstance(trees, list):
        raise _bad("'trees' must be the list of Booster.get_dump(dump_format='json')")
    if len(trees) > MAX_TREES:
        raise _bad(f"the ensemble has {len(trees):,} trees; at most {MAX_TREES:,}")
    if "features" in raw:
        features = _features(raw["features"])
        index = {f"f{j}": j for j in range(len(features))}
    else:
        names = sorted(set().union(*(_split_names(t) for t in trees)))
        features = _features(names or ["_"])
        index = {name: j for j, name in enumerate(names)}
    builder = _Builder(len(features))
    for i, tree in enumerate(trees):
        _xgb_tree(tree, i, index, builder)
    return builder.build("xgboost", "XGBoost", features, True, "logit", math.log(base_score / (1 - base_score)), 1.0)


def _split_names(tree: Any) -> set[str]:
    """The split names of a dumped tree (used as column names when ``features`` is absent)."""
    if isinstance(tree, str):
        try:
            tree = json.loads(tree)
        except ValueError:
            raise _bad("a tree is not valid JSON") from None
    out, stack = set(), [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("split"), str):
                out.add(node["split"])
            kids = node.get("children", [])
            stack.extend(kids if isinstance(kids, list) else [])
    return out


def read_ensemble(raw: Any) -> Ensemble:
    """The checked ensemble of a statement parameter (a dict, or its JSON text)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise _bad("the model parameter is not valid JSON") from None
    if isinstance(raw, list):
        raise _bad("an XGBoost dump needs its base_score: pass {'format': 'xgboost', 'base_score': b, 'trees': dump}")
    if not isinstance(raw, dict) or raw.get("format") not in ("sklearn", "xgboost"):
        raise _bad("the model must be an object with 'format': 'sklearn' or 'xgboost' (docs/models.md)")
    return _sklearn(raw) if raw["format"] == "sklearn" else _xgboost(raw)


# -- evaluation --------------------------------------------------------------------------------
def leaves_of(ens: Ensemble, x: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """Each row's leaf in every tree, (rows, trees), global node ids; -1 where a NULL (NaN)
    feature has no ``missing`` branch. Vectorized: all rows and trees move one level per step
    (``depth`` steps), in chunks of at most ``chunk`` row-tree pairs (small enough for the
    CPU's cache: 4 times faster than 16 times larger chunks). A leaf points to itself
    (and a row without a branch to a sink), so every step is the same few gathers."""
    rows, trees, n = x.shape[0], ens.roots.size, ens.feature.size
    sink = n  # where a NULL without a missing branch goes; stays there
    leaf = ens.feature < 0
    own = np.arange(n + 1, dtype=np.int64)
    left = np.append(np.where(leaf, own[:n], ens.left), sink)
    right = np.append(np.where(leaf, own[:n], ens.right), sink)
    missing = np.append(np.where(leaf, own[:n], np.where(ens.missing < 0, sink, ens.missing)), sink)
    feature = np.append(np.where(leaf, 0, ens.feature), 0)
    thresholds = ens.threshold.astype(np.float32).astype(np.float64) if ens.format == "xgboost" else ens.threshold
    thresholds = np.append(thresholds, 0.0)
    width = max(x.shape[1], 1)
    out = np.empty((rows, trees), dtype=np.int64)
    step = max(1, chunk // max(trees, 1))
    for start in range(0, rows, step):
        xs = np.ascontiguousarray(x[start : start + step]).ravel()
        base = (np.arange(xs.size // width, dtype=np.int64) * width)[:, None]
        node = np.broadcast_to(ens.roots, (base.shape[0], trees)).copy()
        for _ in range(ens.depth):
            value = xs[base + feature[node]]
            t = thresholds[node]
            go_left = value < t if ens.strict else value <= t
            node = np.where(np.isnan(value), missing[node], np.where(go_left, left[node], right[node]))
        out[start : start + step] = np.where(node == sink, -1, node)
    return out


def scores(ens: Ensemble, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eta, p, leaves) of every row of ``x`` (rows x features, NaN for NULL): NaN eta and p
    for a row without a score (a NULL feature: the sklearn format, or no ``missing`` branch).
    Features are rounded to float32 first, as scikit-learn and XGBoost compare them (and
    XGBoost's thresholds, which it keeps in float32)."""
    x = np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)  # as both libraries compare
    leaves = leaves_of(ens, x)
    dropped = np.any(leaves < 0, axis=1)
    if ens.format == "sklearn":
        dropped |= np.any(np.isnan(x), axis=1)
    total = ens.value[np.maximum(leaves, 0)].sum(axis=1)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if ens.link == "logit":
            eta = ens.base + ens.scale * total
            p = np.where(eta >= 0, 1.0 / (1.0 + np.exp(-eta)), np.exp(eta) / (1.0 + np.exp(eta)))
        else:
            p = total / ens.roots.size
            clipped = np.clip(p, CLIP, 1.0 - CLIP)  # a share of 0 or 1: a finite score for the fits
            eta = np.log(clipped) - np.log1p(-clipped)
    eta[dropped] = np.nan
    p[dropped] = np.nan
    return eta, p, leaves
