"""HAVING, ORDER BY, LIMIT and OFFSET: post-processing of released values, on the analyst's side.

These clauses never reach a site and add no MPC step. The committee opens every unsuppressed
cell of the query as usual (the reveal points do not change); :func:`apply` then filters, sorts
and cuts the reconstructed table, which holds only public values. They can therefore neither
protect nor disclose anything: ``HAVING COUNT(*) > 10`` hides small rows from the display, not
from the analyst's kernel, which received them anyway.

They refer only to released output columns and group keys (by output name, select-list
position, or an aggregate written exactly as a select item). A value the analyst does not know
is *unknown*, as SQL's NULL: a suppressed cell, a ROLLUP/CUBE margin's key (``(all)``, NULL in
SQL) and a NULL group. A HAVING predicate that is unknown drops the row (three-valued logic, as
SQL); ORDER BY puts unknown values last (``NULLS LAST``, DuckDB's default) unless the query says
``NULLS FIRST``.

The spec lives in the plan's JSON (``data["post"]``), so the plan digest covers it:
``{"having": SQL text over quoted output names | None, "order": [{"column", "desc",
"nulls_first"}], "limit": int | None, "offset": int}``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlglot
import sqlglot.expressions as exp

from ..errors import UnsupportedQuery

DIALECT = "duckdb"
Mask = npt.NDArray[np.bool_]

# Nodes a HAVING predicate may hold once its references are output columns.
HAVING_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Neg,
    exp.Add, exp.Sub, exp.Mul, exp.Div,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In,
    exp.And, exp.Or, exp.Not,
)  # fmt: skip

_COMPARE: dict[type[exp.Expr], Callable[[Any, Any], Any]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
}
_ARITHMETIC: dict[type[exp.Expr], Callable[[Any, Any], Any]] = {
    exp.Add: operator.add,
    exp.Sub: operator.sub,
    exp.Mul: operator.mul,
    exp.Div: operator.truediv,
}


@dataclass(frozen=True)
class OrderItem:
    """One ORDER BY item: an output column, its direction and where unknown values go."""

    column: str
    desc: bool = False
    nulls_first: bool = False


@dataclass(frozen=True)
class Post:
    """The post-processing clauses of a query, with references already turned into output names.

    ``having`` is a predicate whose columns are output names (unqualified, quoted).
    """

    having: exp.Expression | None = None
    order: tuple[OrderItem, ...] = ()
    limit: int | None = None
    offset: int = 0

    @property
    def active(self) -> bool:
        """Whether there is anything to do (plans without post-processing carry no entry)."""
        return self != Post()

    def to_json(self) -> dict[str, Any]:
        return {
            "having": self.having.sql(DIALECT) if self.having is not None else None,
            "order": [{"column": o.column, "desc": o.desc, "nulls_first": o.nulls_first} for o in self.order],
            "limit": self.limit,
            "offset": self.offset,
        }


def output_column(name: str) -> exp.Column:
    """A reference to the output column ``name`` (quoted: output names keep their case)."""
    return exp.column(exp.to_identifier(name, quoted=True))


def apply(frame: pd.DataFrame, spec: Mapping[str, Any] | None, unknown: Mapping[str, Mask]) -> pd.DataFrame:
    """``frame`` filtered by HAVING, sorted by ORDER BY and cut by OFFSET/LIMIT.

    ``unknown[column]`` marks the cells whose value the analyst does not know (suppressed cells,
    margin and NULL keys). ``frame.attrs["suppressed"]`` follows the rows.
    """
    if not spec:
        return frame
    rows = np.arange(len(frame))
    if spec.get("having"):
        value, known = _eval(sqlglot.parse_one(spec["having"], read=DIALECT), frame, unknown)
        rows = rows[np.asarray(value, dtype=bool) & known]
    if spec.get("order"):
        keys = [
            _sort_key(frame[o["column"]].to_numpy(object)[rows], unknown[o["column"]][rows], o) for o in spec["order"]
        ]
        rows = rows[np.lexsort(keys[::-1])]  # lexsort: last key is the primary one; stable
    offset = int(spec.get("offset") or 0)
    limit = spec.get("limit")
    rows = rows[offset : None if limit is None else offset + int(limit)]
    out = frame.iloc[rows].reset_index(drop=True)
    out.attrs = dict(frame.attrs)
    out.attrs["suppressed"] = {
        c: np.asarray(f, dtype=bool)[rows].tolist() for c, f in frame.attrs["suppressed"].items()
    }
    return out


def _sort_key(values: npt.NDArray[Any], unknown: Mask, item: Mapping[str, Any]) -> npt.NDArray[np.float64]:
    """Ranks of the known values (negated for DESC); unknown values after (or before) all."""
    key = np.zeros(len(values), dtype=np.float64)
    codes, _ = pd.factorize(pd.Series(values[~unknown], dtype=object), sort=True)
    key[~unknown] = -codes if item.get("desc") else codes
    key[unknown] = -np.inf if item.get("nulls_first") else np.inf
    return key


def _eval(node: exp.Expr, frame: pd.DataFrame, unknown: Mapping[str, Mask]) -> tuple[npt.NDArray[Any], Mask]:
    """Values and known-mask of ``node`` over the rows of ``frame`` (SQL three-valued logic)."""
    n = len(frame)
    if isinstance(node, exp.Paren):
        return _eval(node.this, frame, unknown)
    if isinstance(node, exp.Column):
        return frame[node.name].to_numpy(object), ~np.asarray(unknown[node.name], dtype=bool)
    if isinstance(node, exp.Null):
        return np.full(n, None, dtype=object), np.zeros(n, dtype=bool)
    if isinstance(node, exp.Boolean | exp.Literal):
        value: object = node.to_py()
        value = float(value) if isinstance(value, Decimal) else value  # 1.5 reads as a Decimal
        return np.full(n, value, dtype=object), np.ones(n, dtype=bool)
    if isinstance(node, exp.Neg):
        v, k = _eval(node.this, frame, unknown)
        return _where(k, lambda a: -a, v), k
    if type(node) in _ARITHMETIC or type(node) in _COMPARE:
        a, ka = _eval(node.this, frame, unknown)
        b, kb = _eval(node.expression, frame, unknown)
        known = ka & kb
        if isinstance(node, exp.Div):
            known &= np.asarray(b != 0, dtype=bool)  # x / 0 is NULL, as DuckDB
        fn = _ARITHMETIC.get(type(node)) or _COMPARE[type(node)]
        return _where(known, lambda x, y: fn(x, y), a, b, node=node), known
    if isinstance(node, exp.Between):
        low = exp.GTE(this=node.this, expression=node.args["low"])
        high = exp.LTE(this=node.this, expression=node.args["high"])
        return _eval(exp.And(this=low, expression=high), frame, unknown)
    if isinstance(node, exp.In):
        parts = [exp.EQ(this=node.this, expression=e) for e in node.expressions]
        out = parts[0]
        for p in parts[1:]:
            out = exp.Or(this=out, expression=p)  # type: ignore[assignment]
        return _eval(out, frame, unknown)
    if isinstance(node, exp.Not):
        v, k = _eval(node.this, frame, unknown)
        return ~_truth(v, k), k
    if isinstance(node, exp.And | exp.Or):
        a, ka = _eval(node.this, frame, unknown)
        b, kb = _eval(node.expression, frame, unknown)
        ta, tb = _truth(a, ka), _truth(b, kb)
        if isinstance(node, exp.And):  # FALSE AND unknown is FALSE
            return ta & tb, (ka & kb) | (ka & ~ta) | (kb & ~tb)
        return ta | tb, (ka & kb) | ta | tb  # TRUE OR unknown is TRUE
    raise UnsupportedQuery(f"{node.sql(DIALECT)} is not supported in HAVING")


def _truth(values: npt.NDArray[Any], known: Mask) -> Mask:
    return np.where(known, values, False).astype(bool)


def _where(known: Mask, fn: Callable[..., Any], *args: npt.NDArray[Any], node: exp.Expr | None = None) -> Any:
    """``fn`` applied to the known rows only (the others hold None)."""
    out = np.full(len(known), None, dtype=object)
    try:
        out[known] = fn(*(a[known] for a in args))
    except TypeError:
        what = node.sql(DIALECT) if node is not None else "an expression"
        raise UnsupportedQuery(f"HAVING: {what} compares or combines values of different kinds") from None
    return out
