"""Model formulas: ``y ~ x1 + x2 + C(cat) + a:b``, in the spirit of patsy and R.

Grammar (an intercept is always included)::

    formula := response "~" term ("+" term)*
    term    := factor (":" factor)*          an interaction is the product of its factors
    factor  := column | "I(" sql ")" | "C(" column ["," reference] ")"
    reference := value | "Treatment(" value ")" | "Treatment(reference=" value ")"

``response`` is any SQL expression over the table (``status = 2`` is a 0/1 outcome). A numeric
column enters as itself, ``I(expr)`` as the value of an SQL expression (``I(gnp / 1000)``,
patsy's spelling); ``C(col)`` enters as one 0/1 indicator per level of the column's
public domain (declared in the schema), except the reference level (the first domain value
unless given), as statsmodels' treatment coding does. An interaction multiplies the design
columns of its factors (every combination of their columns).

Missing values: a row enters the model only when the response and every column the formula
names are not NULL and every ``C()`` column holds one of its domain's values (the *complete
cases*); the other rows of the WHERE set are dropped and counted (:attr:`Design.complete`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import sqlglot
import sqlglot.expressions as exp

from ..errors import QuerySyntaxError, UnsupportedQuery
from ..query.catalog import KeyValue

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CAT = re.compile(rf"^C\(\s*({_NAME})\s*(?:,\s*(.+?)\s*)?\)$", re.IGNORECASE | re.DOTALL)
_IDENTITY = re.compile(r"^I\((.+)\)$", re.DOTALL)
_TREATMENT = re.compile(r"^Treatment\(\s*(?:reference\s*=\s*)?(.+?)\s*\)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Factor:
    """One factor of a term: a numeric column, or a categorical ``C(column)``."""

    column: str
    categorical: bool = False
    reference: KeyValue = None  # the reference level given in the formula (categorical only)
    has_reference: bool = False


@dataclass(frozen=True)
class Formula:
    """A parsed formula: the response's SQL and the terms (tuples of factors)."""

    response: str
    terms: tuple[tuple[Factor, ...], ...]

    @property
    def columns(self) -> list[str]:
        """Every column (or ``I(expr)``) the right-hand side names, once, in order of appearance."""
        return list(dict.fromkeys(f.column for term in self.terms for f in term))

    @property
    def sources(self) -> list[str]:
        """The SQL of each of :attr:`columns` (the expression inside ``I()``)."""
        return [c[2:-1] if _IDENTITY.match(c) else c for c in self.columns]


@dataclass(frozen=True)
class DesignColumn:
    """A column of the design matrix: its label (statsmodels' spelling) and SQL over the row."""

    name: str
    sql: exp.Expression


@dataclass(frozen=True)
class Level:
    """A level of a categorical column, or a cell of an interaction of categorical columns: the
    persons holding it are counted (disclosure)."""

    column: str
    value: KeyValue
    condition: exp.Expr


@dataclass(frozen=True)
class Design:
    """The design: columns (intercept first), the complete-case condition, categorical levels."""

    columns: tuple[DesignColumn, ...]
    complete: exp.Expr
    levels: tuple[Level, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def level_literal(text: str) -> KeyValue:
    """A reference level as written: a quoted string, a number, TRUE/FALSE."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise QuerySyntaxError(f"reference level {text!r} is not a string, number or boolean") from None


def _factor(text: str) -> Factor:
    text = text.strip()
    identity = _IDENTITY.match(text)
    if identity:
        return Factor(f"I({identity.group(1).strip()})")
    cat = _CAT.match(text)
    if cat:
        column, ref = cat.group(1).lower(), cat.group(2)
        if ref is None:
            return Factor(column, categorical=True)
        treatment = _TREATMENT.match(ref)
        return Factor(column, True, level_literal(treatment.group(1) if treatment else ref), True)
    if not re.fullmatch(_NAME, text):
        raise QuerySyntaxError(f"formula term {text!r}: expected a column, C(column) or a:b")
    return Factor(text.lower())


def _column_of(f: Factor) -> str:
    """The column a factor reads: ``age``, ``C(age)`` and ``I(age)`` all read ``age`` (the SQL
    of any other ``I()`` stands for itself)."""
    inner = f.column[2:-1].strip() if _IDENTITY.match(f.column) else f.column
    return inner.lower() if re.fullmatch(_NAME, inner) else f.column


def split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside parentheses, brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_formula(text: str) -> Formula:
    """Parse ``response ~ terms``; raises :class:`QuerySyntaxError`."""
    sides = split_top(text, "~")
    if len(sides) != 2 or not sides[0].strip() or not sides[1].strip():
        raise QuerySyntaxError("a model needs a formula 'response ~ term + term ...'")
    response, rhs = sides[0].strip(), sides[1]
    try:
        sqlglot.parse_one(response, read="duckdb")
    except sqlglot.ParseError:
        raise QuerySyntaxError(f"the response {response!r} is not an SQL expression") from None
    terms: list[tuple[Factor, ...]] = []
    named: dict[frozenset[str], str] = {}  # the columns of each term, to the term as written
    for raw in split_top(rhs, "+"):
        if not raw.strip():
            raise QuerySyntaxError("an empty term in the formula ('+' with nothing after it)")
        if raw.strip() == "1":
            continue  # the intercept is always there
        term = tuple(_factor(f) for f in split_top(raw, ":"))
        columns = frozenset(_column_of(f) for f in term)
        if len(columns) != len(term):
            raise QuerySyntaxError(f"term {raw.strip()!r} names a column twice")
        if columns in named:  # age + age, C(sex) + sex, age + I(age): one column, two terms
            first, which = named[columns], ":".join(sorted(columns))
            raise QuerySyntaxError(
                f"the formula names {which!r} twice ({first!r} and {raw.strip()!r}): keep one of the terms"
            )
        named[columns] = raw.strip()
        terms.append(term)
    if not terms:
        raise QuerySyntaxError("the formula has no term besides the intercept")
    return Formula(response, tuple(terms))


def _condition(column: exp.Expression, value: KeyValue) -> exp.Expression:
    lit = exp.Boolean(this=value) if isinstance(value, bool) else exp.convert(value)
    return exp.EQ(this=column.copy(), expression=lit)


def _indicator(cond: exp.Expression) -> exp.Expression:
    return exp.Case(ifs=[exp.If(this=cond.copy(), true=exp.Literal.number(1))], default=exp.Literal.number(0))


def _label(value: KeyValue) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def design(
    formula: Formula,
    columns: dict[str, exp.Expression],
    response: exp.Expression,
    domains: dict[str, tuple[KeyValue, ...] | None],
) -> Design:
    """The design of ``formula``: ``columns`` maps each named column to its resolved SQL,
    ``response`` is the resolved response, ``domains`` the schema's domains of categorical
    columns (a ``C()`` column needs one)."""
    double = exp.DataType.build("DOUBLE")
    out = [DesignColumn("Intercept", exp.Literal.number(1))]
    levels: list[Level] = []
    needed: list[exp.Expression] = [response, *(columns[c] for c in formula.columns)]
    in_domain: list[exp.Expression] = []
    seen_levels: set[str] = set()
    for term in formula.terms:
        parts: list[list[tuple[str, exp.Expression]]] = []
        for f in term:
            col = columns[f.column]
            if not f.categorical:
                parts.append([(f.column, exp.Cast(this=col.copy(), to=double))])
                continue
            domain = [v for v in (domains.get(f.column) or ()) if v is not None]
            if len(domain) < 2:
                raise UnsupportedQuery(f"C({f.column}) needs a public domain of two or more values in the schema")
            ref = domain[0]
            if f.has_reference:
                if f.reference not in domain:
                    raise UnsupportedQuery(f"C({f.column}): the reference level is not in the column's domain")
                ref = f.reference
            if f.column not in seen_levels:
                seen_levels.add(f.column)
                levels += [Level(f.column, v, _condition(col, v)) for v in domain]
                in_domain.append(exp.In(this=col.copy(), expressions=[_condition(col, v).expression for v in domain]))
            name = f"C({f.column})"
            parts.append([(f"{name}[T.{_label(v)}]", _indicator(_condition(col, v))) for v in domain if v != ref])
        cats = [f for f in term if f.categorical]
        if len(cats) > 1:  # an interaction of categorical terms: each cell of their levels is a query set
            domains_of = [[v for v in (domains.get(f.column) or ()) if v is not None] for f in cats]
            for values in itertools.product(*domains_of):
                conds = [_condition(columns[f.column], v) for f, v in zip(cats, values, strict=True)]
                label = ":".join(f"{f.column}={_label(v)}" for f, v in zip(cats, values, strict=True))
                levels.append(Level(":".join(f.column for f in cats), label, exp.and_(*conds)))
        for combo in itertools.product(*parts):
            label = ":".join(n for n, _ in combo)
            sql: exp.Expression = combo[0][1].copy()
            for _, e in combo[1:]:
                sql = exp.Mul(this=exp.Paren(this=sql), expression=exp.Paren(this=e.copy()))
            out.append(DesignColumn(label, sql))
    complete: exp.Expr = exp.and_(
        *(exp.Not(this=exp.Is(this=exp.Paren(this=e.copy()), expression=exp.Null())) for e in needed), *in_domain
    )
    return Design(tuple(out), complete, tuple(levels))
