"""No oracles: a site's local step gives the same public outcome whatever its data holds.

A query that fails at one site only when some record exists is an oracle: the failure says that
the record exists and where. Three layers close it (docs/query-language.md, "Failures"):

1. *Total local SQL* (:func:`total_sql`, at compile time). Every analyst CAST becomes
   TRY_CAST, and every analyst expression that reaches the engine (the WHERE condition, join
   conditions other than a plain column equality, each aggregate's argument, each group-key
   comparison) is wrapped in DuckDB's ``TRY(...)``: a row on which it raises (integer overflow,
   ``%`` or ``//`` by zero, an implicit string conversion, a date out of range, a substring
   position out of range, a CASE branch mixing types) gets NULL instead, exactly as a value
   that does not convert does under TRY_CAST. Group keys: a NULL or out-of-domain value goes to
   the key's ``(other)`` cell (:func:`with_other`), suppressed like any cell (an empty one never
   protects a small cell of its ROLLUP/CUBE line: query/disclosure.py counts it as 0); a CASE bin's
   WHEN conditions are total (:func:`total_case`), so it needs no such cell.
2. *Out-of-range pre-aggregates* (:func:`range_penalty`, at a site). A pre-aggregate that does
   not fit the fixed-point range (or is not finite) is input as 0, and the site subtracts
   :data:`PENALTY` from each of its support counts of that base cell: the pooled count is then
   negative, below every minimum cell size, so the cell (and every margin holding it) is
   suppressed by the ordinary suppression on shares. No round, no new reveal point.
3. *Anything else* (an engine error not ruled out above, a bug). The site takes part in the
   MPC with fill values and a secret failure word (:func:`failed_inputs`); the plan's first step
   opens only the sum of the sites' failure words (:data:`CHECK_STEP`, a declared reveal point).
   A failing site's word is uniform over the non-zero elements of Z_2^64 (:func:`failure_word`),
   so the opened sum is 0 when no site failed, and otherwise uniform: non-zero but for a chance
   of about 2^-64, and saying neither which site nor how many failed. Every member then ends
   the session at the same point and raises the same :class:`~site_agent.errors.LocalStepError`.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlglot.expressions as exp

OTHER = "(other)"
"""Label of the cell that takes a key's NULL and out-of-domain values (last in its domain)."""

PENALTY = 2**30
"""Subtracted from a site's support counts in a cell holding an out-of-range value: more than
three sites' counts together (each below 2^24), so the pooled count is negative."""

FAILED = "local_failed"
"""The input holding a site's secret failure word (in base cell 0; the other cells hold 0)."""

CHECK_STEP = "check_local"


def needs_other(domain: tuple[Any, ...], expr: exp.Expression, is_site: bool) -> bool:
    """Whether a group key gets an ``(other)`` cell.

    ``SITE`` never does. A CASE bin (its WHEN conditions made total by :func:`total_case`) is one
    of its labels, or NULL only without ELSE: it needs none unless its labels mix strings and
    numbers (the engine then fails to convert some of them). A column needs one unless its
    declared domain holds NULL (a site's values must lie in the declared domain); a predicate
    always does, for NULL.
    """
    if is_site:
        return False
    inner = expr.unnest()
    if isinstance(inner, exp.Case):
        return len({isinstance(v, str) for v in domain if v is not None}) > 1
    if isinstance(inner, exp.Column):
        return None not in domain
    return True


def with_other(domain: tuple[Any, ...], expr: exp.Expression, is_site: bool) -> tuple[Any, ...]:
    """The key's domain as the plan records it: ``(other)`` appended where :func:`needs_other`."""
    return (*domain, OTHER) if needs_other(domain, expr, is_site) else domain


def total_case(expr: exp.Expression) -> exp.Expression:
    """A CASE key with each WHEN condition total: a condition that raises on a row counts as
    NULL there, so the row goes on to the next branch, as SQL does for NULL. Other keys as is."""
    inner = expr.unnest()
    if not isinstance(inner, exp.Case):
        return expr
    out = inner.copy()
    for branch in out.args.get("ifs") or []:
        branch.set("this", total(branch.this))
    return out


_ATOMS = (exp.Column, exp.Literal, exp.Boolean, exp.Null)
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is)


def cannot_raise(e: exp.Expr) -> bool:
    """Whether ``e`` evaluates on every row without an engine error: a column or a literal, a
    comparison of a column with a literal (the validator refuses literals that do not fit the
    column's type), and AND/OR/NOT, COALESCE, DISTINCT and CASE of those (the release rule's
    own counts, site_agent.privacy.release, are such). Everything else is wrapped in TRY."""
    e = e.unnest()
    if isinstance(e, _ATOMS):
        return True
    if isinstance(e, _COMPARISONS):
        a, b = e.this.unnest(), e.expression.unnest()
        return (isinstance(a, exp.Column) and isinstance(b, _ATOMS)) or (
            isinstance(b, exp.Column) and isinstance(a, _ATOMS)
        )
    if isinstance(e, exp.And | exp.Or):
        return cannot_raise(e.this) and cannot_raise(e.expression)
    if isinstance(e, exp.Not):
        return cannot_raise(e.this)
    if isinstance(e, exp.Coalesce | exp.Distinct):
        return all(cannot_raise(x) for x in [e.this, *e.expressions] if x is not None)
    if isinstance(e, exp.Case) and e.this is None:
        parts = [p for b in e.args.get("ifs") or [] for p in (b.this, b.args["true"])]
        return all(cannot_raise(x) for x in [*parts, e.args.get("default") or exp.Null()])
    return False


def other_cells(labels: list[tuple[int | None, ...]], keys: list[dict[str, Any]]) -> npt.NDArray[np.bool_]:
    """Which output cells (by their labels, ``Cells.labels()``) lie in some key's ``(other)`` cell."""
    last = [len(k["domain"]) - 1 if k.get("other") else -1 for k in keys]
    return np.array([any(v is not None and v == at for v, at in zip(lab, last, strict=True)) for lab in labels])


def total(e: exp.Expr) -> exp.Expr:
    """``TRY(e)``: NULL on a row where ``e`` raises, ``e`` elsewhere. An expression that cannot
    raise stays bare: TRY costs time on every row and keeps filters from reaching the scan."""
    return e if isinstance(e, exp.Try) or cannot_raise(e) else exp.Try(this=e)


def _plain_equality(e: exp.Expr) -> bool:
    """``a.x = b.y`` between two columns: left bare so the engine keeps its hash join."""
    return isinstance(e, exp.EQ) and isinstance(e.this, exp.Column) and isinstance(e.expression, exp.Column)


def _total_condition(cond: exp.Expr) -> exp.Expr:
    parts: list[exp.Expr] = list(cond.flatten()) if isinstance(cond, exp.And) else [cond]
    out = [p if _plain_equality(p) else total(p) for p in parts]
    return exp.and_(*out) if len(out) > 1 else out[0]


def total_sql(sel: exp.Select, copy: bool = True) -> exp.Select:
    """The local SELECT with every analyst expression made total (see the module docstring).

    Works on a copy (in place with ``copy=False``, for a tree the caller built for this alone).
    Expects the planner's local SELECT: key cells built with :func:`total` comparisons already,
    aggregates over analyst arguments, the analyst's WHERE and joins.
    """
    sel = sel.copy() if copy else sel
    for cast in list(sel.find_all(exp.Cast)):
        if not isinstance(cast, exp.TryCast):
            cast.replace(exp.TryCast(this=cast.this, to=cast.args["to"]))
    where = sel.args.get("where")
    if where is not None:
        where.set("this", total(where.this))
    for join in sel.args.get("joins") or []:
        on = join.args.get("on")
        if on is not None:
            join.set("on", _total_condition(on))
    for agg in list(sel.find_all(exp.AggFunc)):
        arg = agg.this
        if arg is None or isinstance(arg, exp.Star):
            continue
        if isinstance(arg, exp.Distinct):
            arg.set("expressions", [total(e) for e in arg.expressions])
        else:
            agg.set("this", total(arg))
    return sel


def check_step() -> dict[str, Any]:
    """The plan step that opens the sum of the sites' failure words (first step of every plan)."""
    return {"op": CHECK_STEP, "input": FAILED}


def check_input() -> dict[str, Any]:
    """The plan input that carries a site's failure word (no local query: set by the site)."""
    return {"name": FAILED, "query": "", "column": "", "encoding": "int", "fill": 0}


def check_reveal() -> dict[str, Any]:
    """The declared reveal point of :func:`check_step`."""
    return {
        "name": FAILED,
        "value": FAILED,
        "encoding": "int",
        "support": -1,
        "shape": "1 (to the committee)",
        "what": "whether the local step failed at some site: the sum of the sites' secret failure words, "
        "0 when none failed; it names no site and no count",
    }


def failure_word() -> int:
    """A failing site's secret word: uniform over the non-zero elements of Z_2^64. A sum of one
    or more such words is uniform too (0 with probability about 2^-64), so the opened sum says
    that some site failed and nothing about which or how many."""
    return 1 + secrets.randbelow(2**64 - 1)


def range_penalty(bad: npt.NDArray[np.bool_], supports: dict[str, npt.NDArray[np.float64]]) -> None:
    """Subtract :data:`PENALTY` from each support count (in place) in the cells marked ``bad``."""
    for arr in supports.values():
        arr[bad] -= PENALTY
