"""What one row adds to one released number: aggregate arguments split into query-set branches.

The release rule (docs/privacy.md) speaks of *query sets*: the persons a statistic is computed
over. WHERE and the cell's keys select rows; a conditional inside an aggregate selects further:
``SUM(CASE WHEN p THEN x ELSE 0 END)`` is a statistic over two query sets, the rows where ``p``
holds (each adding x) and the others (each adding 0). An analyst who can make one row add a
value different from every other row's can read that row back from a large cell, so an
aggregate argument may only be:

* a *plain contribution*: a column, an affine function of one column (``a * x + b``, ``x / a``,
  ``-x``, numeric casts of those), or a number;
* a predicate (``AVG(age >= 65)``, ``PROPORTION(status = 2)``): two branches, true adding 1 and
  false adding 0;
* a ``CASE`` (or ``IF``) whose results are plain contributions or NULL: one branch per ``WHEN``
  and one for ``ELSE``, each selecting the rows that reach it.

Anything else that would let per-row values be engineered (a product of two columns, ``GREATEST``
or ``FLOOR`` of a column, which can build an indicator of one value, a predicate cast to a
number, a nested conditional) is refused with the reason. :func:`branches` returns the branches;
the planner turns each into a query set whose size the release rule checks on shares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import sqlglot.expressions as exp

Fail = Callable[[exp.Expression, str], NoReturn]
"""Raises the analyst's error for a node (the parser's, which knows line and column)."""

PREDICATES: tuple[type[exp.Expression], ...] = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is, exp.In, exp.Between,
    exp.Like, exp.ILike, exp.Not, exp.And, exp.Or, exp.Boolean,
)  # fmt: skip

_NUMERIC_TYPES = frozenset(
    {
        exp.DataType.Type.BIGINT, exp.DataType.Type.INT, exp.DataType.Type.SMALLINT, exp.DataType.Type.TINYINT,
        exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, exp.DataType.Type.DECIMAL, exp.DataType.Type.INT128,
    }
)  # fmt: skip

HINT = (
    "aggregate arguments are a column, an affine function of one column (a * x + b), a predicate, "
    "or a CASE whose results are such values (see docs/privacy.md)"
)


@dataclass(frozen=True)
class Branch:
    """One query set of an aggregate argument.

    ``when`` selects the rows that reach this branch (``None``: every row of the cell);
    ``value`` is what each of them adds (a plain contribution). ``value_column`` tells whether
    the value can be NULL row by row (it reads a column): then the rows it counts are those of
    ``when`` with a non-NULL value.
    """

    when: exp.Expression | None
    value: exp.Expression
    value_column: bool


def plain_columns(node: exp.Expression, fail: Fail) -> set[str]:
    """The columns of a plain contribution (at most one); refuse anything that is not one."""
    if isinstance(node, exp.Column):
        return {node.sql()}
    if isinstance(node, exp.Literal) and not node.is_string:
        return set()
    if isinstance(node, exp.Paren | exp.Neg):
        return plain_columns(node.this, fail)
    if isinstance(node, exp.Cast | exp.TryCast):
        if isinstance(node.this, PREDICATES):
            fail(node, "a predicate cast to a number is not a contribution; use AVG(<predicate>) or PROPORTION")
        to = node.args.get("to")
        if not isinstance(to, exp.DataType) or to.this not in _NUMERIC_TYPES:
            fail(node, f"only numeric casts are allowed in aggregate arguments ({node.sql('duckdb')})")
        return plain_columns(node.this, fail)
    if isinstance(node, exp.Add | exp.Sub):
        cols = plain_columns(node.this, fail) | plain_columns(node.expression, fail)
        if len(cols) > 1:
            fail(node, f"{node.sql('duckdb')} combines several columns; {HINT}")
        return cols
    if isinstance(node, exp.Mul):
        left, right = plain_columns(node.this, fail), plain_columns(node.expression, fail)
        if left and right:
            fail(node, f"{node.sql('duckdb')} multiplies columns; {HINT}")
        return left | right
    if isinstance(node, exp.Div):
        if plain_columns(node.expression, fail):
            fail(node, f"{node.sql('duckdb')} divides by a column; {HINT}")
        return plain_columns(node.this, fail)
    if isinstance(node, PREDICATES):
        fail(node, f"a predicate inside arithmetic ({node.sql('duckdb')}) is not a contribution; {HINT}")
    fail(node, f"{node.sql('duckdb')} is not allowed here: {HINT}")


def _unwrap(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _true(cond: exp.Expression) -> exp.Expression:
    """``cond`` is TRUE (not FALSE, not NULL), as CASE tests its conditions."""
    return exp.Coalesce(this=exp.Paren(this=cond.copy()), expressions=[exp.false()])


def _conditional(node: exp.Expression) -> list[tuple[exp.Expression | None, exp.Expression]] | None:
    """A CASE or IF as (condition, result) pairs, ELSE last with condition None; else None."""
    if isinstance(node, exp.If):
        return [(node.this, node.args["true"]), (None, node.args.get("false") or exp.Null())]
    if not isinstance(node, exp.Case):
        return None
    operand = node.this
    pairs: list[tuple[exp.Expression | None, exp.Expression]] = []
    for branch in node.args.get("ifs") or []:
        cond = branch.this if operand is None else exp.EQ(this=operand.copy(), expression=branch.this.copy())
        pairs.append((cond, branch.args["true"]))
    pairs.append((None, node.args.get("default") or exp.Null()))
    return pairs


def branches(arg: exp.Expression, fail: Fail) -> list[Branch]:
    """The query-set branches of an aggregate argument, or the analyst's error (see module doc).

    Branches whose result is NULL add nothing and are left out; an argument that is a plain
    contribution is one branch over the whole cell.
    """
    node = _unwrap(arg)
    if isinstance(node, PREDICATES):
        return [
            Branch(_true(node), exp.Literal.number(1), False),
            Branch(_true(exp.Not(this=exp.Paren(this=node.copy()))), exp.Literal.number(0), False),
        ]
    pairs = _conditional(node)
    if pairs is None:
        return [Branch(None, node, bool(plain_columns(node, fail)))]
    out: list[Branch] = []
    earlier: list[exp.Expression] = []
    for cond, result in pairs:
        value = _unwrap(result)
        if cond is not None and not isinstance(_unwrap(cond), (*PREDICATES, exp.Column)):
            fail(cond, f"a CASE condition must be a predicate or a boolean column, not {cond.sql('duckdb')}")
        reach = [exp.Not(this=_true(c)) for c in earlier] + ([_true(cond)] if cond is not None else [])
        if cond is not None:
            earlier.append(cond)
        if isinstance(value, exp.Null):
            continue
        if _conditional(value) is not None or isinstance(value, PREDICATES):
            fail(value, f"nested conditionals and predicates as CASE results are not allowed; {HINT}")
        when: exp.Expression | None = None
        for part in reach:
            when = part if when is None else exp.And(this=when, expression=part)
        out.append(Branch(when, value, bool(plain_columns(value, fail))))
    return out
