"""Contribution bounding for DP mode: how much one person can move a released value.

Differential privacy protects a person (the schema's ``person = true`` column, the privacy unit
of docs/privacy.md), so the planner must bound what one person adds to each noised
pre-aggregate:

* **rows**: each table with a person column keeps at most ``max_rows_per_person`` rows per
  person (any of them, as the engine meets them, in the site's local SQL, before WHERE); a join of tables multiplies
  their bounds. A table without a person column counts each row as one person.
* **values**: a summed argument is clipped to the public range the schema declares for its
  column (``bounds``, else the grid's ends), carried through the argument's arithmetic by
  interval arithmetic (an affine function of one column, a predicate, a CASE of those: the only
  arguments the release rule accepts, :mod:`.contributions`). An argument without a range is
  refused in DP mode.

Sensitivities are for adding or removing one person (at one site: a person treated at two sites
is two persons, as everywhere in this tool). All in the integer units the noise is added in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import sqlglot.expressions as exp

from .skellam import Sensitivity

Range = tuple[float, float]


def value_range(e: exp.Expression, column_range: Callable[[exp.Column], Range | None]) -> Range | None:
    """The interval a numeric expression takes when every column lies in its ``column_range``
    (NULL results ignored); None when some part has no known range."""
    if isinstance(e, exp.Paren | exp.Cast):
        return value_range(e.this, column_range)
    if isinstance(e, exp.Column):
        return column_range(e)
    if isinstance(e, exp.Literal) and not e.is_string:
        v = float(e.this)
        return (v, v)
    if isinstance(e, exp.Boolean | exp.Predicate | exp.Not | exp.And | exp.Or):
        return (0.0, 1.0)
    if isinstance(e, exp.Neg):
        inner = value_range(e.this, column_range)
        return None if inner is None else (-inner[1], -inner[0])
    if isinstance(e, exp.Case):
        branches = [i.args.get("true") for i in e.args.get("ifs") or []] + [e.args.get("default")]
    elif isinstance(e, exp.If):
        branches = [e.args.get("true"), e.args.get("false")]
    if isinstance(e, exp.Case | exp.If):
        ranges = [value_range(b, column_range) for b in branches if b is not None and not isinstance(b, exp.Null)]
        if not ranges or any(r is None for r in ranges):
            return None
        known = [r for r in ranges if r is not None]
        return (min(r[0] for r in known), max(r[1] for r in known))
    if isinstance(e, exp.Add | exp.Sub | exp.Mul | exp.Div):
        a, b = value_range(e.this, column_range), value_range(e.expression, column_range)
        if a is None or b is None:
            return None
        if isinstance(e, exp.Add):
            return (a[0] + b[0], a[1] + b[1])
        if isinstance(e, exp.Sub):
            return (a[0] - b[1], a[1] - b[0])
        if isinstance(e, exp.Div):
            if b[0] <= 0 <= b[1]:
                return None
            b = (1 / b[1], 1 / b[0])
        products = [x * y for x in a for y in b]
        return (min(products), max(products))
    return None


def clipped(e: exp.Expression, bounds: Range) -> exp.Expr:
    """``LEAST(GREATEST(CAST(e AS DOUBLE), lo), hi)``: the argument held inside its public range
    (as a number: a boolean column is 0 or 1)."""
    lo, hi = (exp.convert(v) for v in bounds)
    number = exp.Cast(this=e.copy(), to=exp.DataType.build("DOUBLE"))
    return exp.func("LEAST", exp.func("GREATEST", number, lo), hi)


def square_range(bounds: Range) -> Range:
    """The range of x^2 for x in ``bounds``."""
    lo, hi = bounds
    top = max(lo * lo, hi * hi)
    return (0.0, top) if lo <= 0 <= hi else (min(lo * lo, hi * hi), top)


def bounded_source(source: exp.Select, persons: Mapping[str, str | None], rows: int) -> exp.Select:
    """``source`` (FROM and JOINs) with every table that has a person column replaced by the same
    table keeping at most ``rows`` rows per person (the first the engine meets), under the same alias."""
    out = source.copy()
    for table in list(out.find_all(exp.Table)):
        alias = table.alias_or_name.lower()
        person = persons.get(alias)
        if person is None:
            continue
        window = exp.Window(this=exp.RowNumber(), partition_by=[exp.column(person)])
        inner = (
            exp.select("*")
            .from_(exp.Table(this=exp.to_identifier(table.name)))
            .qualify(exp.LTE(this=window, expression=exp.Literal.number(rows)))
        )
        table.replace(inner.subquery(table.alias_or_name))
    return out


def rows_bound(persons: Mapping[str, str | None], rows: int) -> int:
    """Rows one person can have in the joined source: ``rows`` per table with a person column
    (a product over a join), 1 for a table without one."""
    return math.prod(rows if p is not None else 1 for p in persons.values())


def count_sensitivity(rows: int) -> Sensitivity:
    """A count per cell: one person's rows change the counts by ``rows`` in total (worst case
    all in one cell, so the L2 norm too); with one row per person the move is in one cell."""
    return Sensitivity(float(rows), float(rows), one_cell=rows == 1)


SUM_UNITS_BITS = 12
"""A noised sum is shared in units chosen so that one person moves it by about 2^12 units:
fine enough that rounding to the unit costs nothing next to the noise (whose sd is a few times
the sensitivity), coarse enough that the noise's Poisson means stay small and exact."""


def sum_unit_bits(rows: int, bounds: Range, most: int) -> int:
    """Fractional bits of a noised sum's unit: 2^-bits, at most ``most`` (the plan's fixed point)."""
    top = rows * max(abs(bounds[0]), abs(bounds[1]))
    return most if top == 0 else min(most, SUM_UNITS_BITS - math.ceil(math.log2(top)))


def sum_sensitivity(rows: int, bounds: Range, bits: int) -> Sensitivity:
    """A sum per cell in units of 2^-bits: rows times the largest magnitude, in units, plus 2
    units for the rounding of the sums (each site's own sum is rounded to the unit)."""
    top = max(abs(bounds[0]), abs(bounds[1]))
    units = math.ceil(rows * top * 2.0**bits) + 2
    return Sensitivity(float(units), float(units), one_cell=rows == 1)
