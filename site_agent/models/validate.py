"""VALIDATE LOGISTIC: a given logistic model evaluated on the pooled rows (external validation).

Statement (docs/models.md, "External validation")::

    VALIDATE LOGISTIC <response> ~ <b0> + <b1>*<term> + ... FROM t [WHERE ...] [BY col]
             [THRESHOLD p] [GRID lo TO hi STEP s] [WITHOUT CALIBRATION]

The right-hand side is ``TREES(:name)``, a tree ensemble sent as the statement parameter
``name`` (:mod:`.trees`: read, checked and scored at each site in numpy; the counts below then
run on the scored rows), or the model's linear predictor with public coefficients, in the formula
language (:mod:`.formula`): a number alone is the intercept; a term is a number times a
numeric column, ``I(sql)`` or ``C(col)[level]`` (1 when ``col`` holds ``level``), or a product
of them (an interaction); terms are joined by ``+`` and ``-``.

Per group (the whole WHERE set, or each value of the BY column's public domain) the analyst
gets: n, events, the AUC (exact on the grid, ties 1/2: the Mann-Whitney statistic),
calibration-in-the-large (mean observed minus mean predicted), the calibration intercept and
slope (LOGISTIC of the outcome on the linear predictor: the GLM program of :mod:`.glm` on one
covariate, run per released group), the Brier score, and the confusion matrix at the threshold.

Method:

1. *Local step*, each site in the clear: per group, rows of the WHERE set, complete cases
   (outcome 0 or 1, linear predictor not NULL), distinct persons, events, the sum of predicted
   probabilities and of squared errors (y - p)^2, the four confusion cells; and per group the
   events and non-events in each bin of the public grid of the linear predictor (eta rounded to
   the nearest grid point lo + j s, clamped to the grid's ends).
2. Shared to the committee and pooled (one ``input_all``).
3. Release rule on shares (:mod:`site_agent.privacy.models`): a group is released when its
   persons, events and non-events each number at least k; its confusion matrix when each of
   its four cells is 0 or at least k (otherwise all four are withheld, so that no cell follows
   from the released margins); its dropped rows when 0 or at least k.
4. On shares, for every group at once: AUC = sum_j pos_j (neg_<j + neg_j / 2) / (P N), as
   2 sum_j pos_j (2 neg_<j + neg_j) / (2 P N): the prefix sums neg_<j are local (free), then
   one product of two vectors and one division; Brier = sum (y - p)^2 / n; CITL = (P - sum p) / n
   (canonical floats, :func:`site_agent.query.numeric.divide_float`).
5. Calibration: for each released group, :func:`site_agent.models.glm.glm_program` on the plan
   of ``LOGISTIC y ~ I(eta) FROM t WHERE ... AND group`` (its own model rules apply: a group
   with too few events for a model has no calibration slope). ``WITHOUT CALIBRATION`` skips the
   fits: the statement is then one scan per site and under 100 rounds.

Grid: scores that agree when rounded to the step s share a bin and count as ties (1/2), as
sklearn counts exactly equal scores; so the AUC is exact for scores on the grid (coefficients
and columns with few decimals, as on the lung data) and otherwise off by at most the share of
positive-negative pairs whose scores differ by less than s (docs/models.md). Scores beyond the
grid's ends are clamped to them (ties there too).
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import sqlglot.expressions as exp

from ..errors import QuerySyntaxError, UnsupportedQuery
from ..mpc import arithmetic as ar
from ..mpc.fixed import FixedPoint, decode_int, encode_int
from ..mpc.party import Party, Protocol, local
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..privacy.bands import held_bands
from ..privacy.models import Check, ModelRules, model_checks, small_counts
from ..query.catalog import DisclosureRules, KeyValue, Schema
from ..query.failsafe import failure_word, total_sql
from ..query.numeric import divide_float
from ..query.parse import DIALECT
from ..query.plan import Plan
from . import glm, trees
from .formula import Design, DesignColumn, level_literal, split_top
from .statement import (
    FLOAT_PARTS,
    MODELS,
    ModelKind,
    Outcome,
    SiteStep,
    Statement,
    empty_outcome,
    opened_floats,
    opened_outputs,
    pool_sites,
    require_model_kind,
    site_shares,
    validate_source,
    with_ledger,
)

INTS = ("n_where", "n", "persons", "pos", "tp", "fp", "fn", "tn")
"""Per group counts; then, per non-intercept term j, the persons with the term non-zero, zero."""
FIXED = ("sum_p", "sq")
FV = 24  # fractional bits of the sums of probabilities and squared errors
MAX_BINS = 2_000_000  # groups x grid points
DEFAULT_GRID = (-10.0, 10.0, 1e-4)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_LEVEL = re.compile(rf"^C\(\s*({_NAME})\s*\)\s*\[\s*(.+?)\s*\]$", re.IGNORECASE | re.DOTALL)
_IDENTITY = re.compile(r"^I\((.+)\)$", re.DOTALL)
_TREES = re.compile(rf"^\s*TREES\s*\(\s*:({_NAME})\s*\)\s*$", re.IGNORECASE)
_CLAUSES = [
    ("by", re.compile(rf"\s+BY\s+({_NAME})\s*;?\s*$", re.IGNORECASE)),
    ("threshold", re.compile(rf"\s+THRESHOLD\s+({_NUMBER})\s*;?\s*$", re.IGNORECASE)),
    ("grid", re.compile(rf"\s+GRID\s+({_NUMBER})\s+TO\s+({_NUMBER})\s+STEP\s+({_NUMBER})\s*;?\s*$", re.IGNORECASE)),
    ("without", re.compile(r"\s+WITHOUT\s+(CALIBRATION)\s*;?\s*$", re.IGNORECASE)),
]


# -- the statement ----------------------------------------------------------------------------
def _split_terms(text: str) -> list[str]:
    """Split at top-level ``+`` and ``-`` (kept with the term), not inside parentheses,
    brackets or quotes, nor in a number's exponent (``1e-5``)."""
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
        elif ch in "+-" and depth == 0 and text[start:i].strip() not in ("", "+", "-"):
            before = text[start:i].rstrip()
            if re.search(r"(?:^|[^A-Za-z_0-9.])(?:\d+\.?\d*|\.\d+)[eE]$", before) and before == text[start:i]:
                continue  # the sign of an exponent
            parts.append(text[start:i])
            start = i
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _sql_literal(value: KeyValue) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


@dataclass(frozen=True)
class Term:
    """One term of the linear predictor: a coefficient times the product of its factors, each
    an SQL source (a column or the inside of ``I()``) and, for ``C(col)[level]``, the level."""

    coef: float
    factors: tuple[tuple[str, KeyValue, bool], ...]  # (source, level, is a level indicator)

    @property
    def label(self) -> str:
        return ":".join(f"C({s})[{v!r}]" if lv else s for s, v, lv in self.factors) or "Intercept"


def parse_linear_predictor(rhs: str) -> list[Term]:
    """The terms of ``b0 + b1*x + b2*C(col)[level] - ...``. Raises :class:`QuerySyntaxError`."""
    terms: list[Term] = []
    for raw in _split_terms(rhs):
        sign, body = (-1.0, raw[1:]) if raw.startswith("-") else (1.0, raw.lstrip("+"))
        coef, factors = sign, []
        for part in (p.strip() for p in split_top(body, "*")):
            if re.fullmatch(_NUMBER, part):
                coef *= float(part)
                continue
            level = _LEVEL.match(part)
            identity = _IDENTITY.match(part)
            if level:
                factors.append((level.group(1).lower(), level_literal(level.group(2)), True))
            elif identity:
                factors.append((identity.group(1).strip(), None, False))
            elif re.fullmatch(_NAME, part):
                factors.append((part.lower(), None, False))
            else:
                raise QuerySyntaxError(f"term {raw!r}: expected a number times a column, I(sql) or C(column)[level]")
        if not math.isfinite(coef):
            raise QuerySyntaxError(f"term {raw!r}: the coefficient is not a finite number")
        terms.append(Term(coef, tuple(factors)))
    if not terms:
        raise QuerySyntaxError("VALIDATE needs the model's linear predictor after '~'")
    return terms


def _product(t: Term, resolved: dict[str, exp.Expression]) -> exp.Expression | None:
    """The product of a term's factors (None for the intercept), NULL when a factor is NULL."""
    double = exp.DataType.build("DOUBLE")
    out: exp.Expression | None = None
    for source, level, is_level in t.factors:
        col = resolved[source]
        if is_level:
            lit: exp.Expr = exp.maybe_parse(_sql_literal(level), dialect=DIALECT)
            factor: exp.Expression = exp.Case(
                ifs=[
                    exp.If(this=exp.Is(this=col.copy(), expression=exp.Null()), true=exp.Null()),
                    exp.If(this=exp.EQ(this=col.copy(), expression=lit), true=exp.convert(1.0)),
                ],
                default=exp.convert(0.0),
            )
        else:
            factor = exp.Cast(this=exp.Paren(this=col.copy()), to=double)
        out = factor if out is None else exp.Mul(this=out, expression=factor)
    return out


def _linear_predictor(terms: list[Term], resolved: dict[str, exp.Expression]) -> exp.Expression:
    """The linear predictor as SQL over the resolved sources (NULL when a factor is NULL)."""
    double = exp.DataType.build("DOUBLE")
    out: exp.Expression | None = None
    for t in terms:
        value: exp.Expression = exp.Cast(this=exp.Literal.string(repr(t.coef)), to=double)
        product = _product(t, resolved)
        if product is not None:
            value = exp.Mul(this=value, expression=product)
        out = value if out is None else exp.Add(this=out, expression=value)
    assert out is not None
    return out


def _clauses(tail: str) -> tuple[str, dict[str, Any]]:
    """The trailing BY, THRESHOLD and GRID clauses (any order, each at most once) and the rest."""
    found: dict[str, Any] = {}
    progress = True
    while progress:
        progress = False
        for name, pattern in _CLAUSES:
            m = pattern.search(tail)
            if m and name not in found:
                found[name] = m.groups()
                tail, progress = tail[: m.start()], True
    for word in ("BY", "THRESHOLD", "GRID", "WITHOUT"):
        if re.search(rf"\b{word}\b", tail, re.IGNORECASE) and word.lower() not in found:
            raise QuerySyntaxError(f"VALIDATE: {word} is misplaced or malformed (see docs/models.md)")
    return tail.strip(), found


@dataclass(frozen=True)
class Scored:
    """A validation's source, resolved: the validated FROM/WHERE query, the outcome expressions
    (in the order given), the score eta and its term products (SQL), the BY column and its
    groups (the public domain; [None] without BY) with each group's condition."""

    query: Any
    outcomes: list[exp.Expression]
    resolved: dict[str, exp.Expression]
    eta: exp.Expression
    products: list[exp.Expression]
    by: str | None
    by_expr: exp.Expression | None
    groups: list[KeyValue]
    conditions: list[exp.Expression]
    column: Callable[[str], Any]
    """The schema's column of a source name (None when no table of the FROM has it)."""


def scored_source(
    tail: str,
    outcomes: list[str],
    terms: list[Term],
    by: str | None,
    schema: Schema,
    rules: DisclosureRules,
    sites: tuple[str, ...] | None,
    features: tuple[str, ...] = (),
) -> Scored:
    """Validate ``FROM tail`` with the outcome expressions, the score's columns (its terms'
    factors, or a tree ensemble's ``features``) and the BY column (:func:`validate_source`),
    check every ``C(col)[level]`` against the column's public domain and take the groups from
    the BY column's. Without terms (a tree ensemble) ``eta`` is NULL: the score is computed at
    the sites in numpy (:mod:`.trees`)."""
    factors = [s for t in terms for s, _, _ in t.factors]
    sources = list(dict.fromkeys([*factors, *features, *([by] if by else [])]))
    query, checked = validate_source(tail, [*outcomes, *sources], schema, rules, sites)
    resolved = dict(zip(sources, checked[len(outcomes) :], strict=True))
    tables = [t.name.lower() for t in query.source.find_all(exp.Table)]

    def column(name: str) -> Any:
        return next((schema.tables[t].columns[name] for t in tables if name in schema.tables[t].columns), None)

    def domain(name: str) -> tuple[KeyValue, ...] | None:
        col = column(name)
        return None if col is None or col.domain is None else tuple(v for v in col.domain if v is not None)

    for t in terms:
        for source, value, is_level in t.factors:
            dom = domain(source) if is_level else ()
            if is_level and (dom is None or value not in dom):
                raise UnsupportedQuery(f"C({source})[{value!r}]: the level is not in the column's public domain")
    groups: list[KeyValue] = [None]
    by_expr = resolved[by] if by else None
    conditions: list[exp.Expression] = []
    if by and by_expr is not None:
        dom = domain(by)
        if not dom:
            raise UnsupportedQuery(f"BY {by}: the column needs a public domain in the schema")
        groups = list(dom)
        literals: list[exp.Expression] = [exp.maybe_parse(_sql_literal(g), dialect=DIALECT) for g in groups]
        conditions = [exp.EQ(this=by_expr.copy(), expression=v) for v in literals]
    eta = _linear_predictor(terms, resolved) if terms else exp.Null()
    products = [x for x in (_product(t, resolved) for t in terms) if x is not None]
    return Scored(query, checked[: len(outcomes)], resolved, eta, products, by, by_expr, groups, conditions, column)


def _ensemble(statement: Statement, name: str) -> trees.Ensemble:
    """The tree ensemble of ``TREES(:name)``: the statement parameter ``name``, checked."""
    if name not in statement.params:
        given = ", ".join(sorted(k for k in statement.params if not k.startswith("@"))) or "none"
        raise QuerySyntaxError(f"TREES(:{name}): no parameter {name!r} was sent with the statement (sent: {given})")
    return trees.read_ensemble(statement.params[name])


def compile_validate(
    statement: Statement, schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None
) -> Plan:
    """The plan of ``VALIDATE LOGISTIC ...`` or ``VALIDATE COX ...`` (:mod:`.validate_cox`)."""
    require_model_kind(rules)
    if re.match(r"\s*COX\b", statement.body, re.IGNORECASE):
        from .validate_cox import compile_validate_cox

        return compile_validate_cox(statement, schema, rules, sites)
    head = re.match(r"\s*LOGISTIC\b(.*)$", statement.body, re.IGNORECASE | re.DOTALL)
    if head is None:
        raise UnsupportedQuery("VALIDATE takes a LOGISTIC or COX model: VALIDATE LOGISTIC y ~ b0 + b1*x ... FROM t")
    sides = split_top(head.group(1), "~")
    if len(sides) != 2 or not sides[0].strip():
        raise QuerySyntaxError("VALIDATE LOGISTIC needs 'response ~ linear predictor'")
    response_text = sides[0].strip()
    named = _TREES.match(sides[1])
    ensemble = _ensemble(statement, named.group(1)) if named else None
    terms = [] if named else parse_linear_predictor(sides[1])
    tail, clauses = _clauses(statement.tail)
    threshold = float(clauses["threshold"][0]) if "threshold" in clauses else 0.5
    if not 0.0 < threshold < 1.0:
        raise UnsupportedQuery("THRESHOLD is a probability strictly between 0 and 1")
    lo, hi, step = (float(v) for v in clauses["grid"]) if "grid" in clauses else DEFAULT_GRID
    if not (step > 0 and hi > lo and math.isfinite(hi - lo)):
        raise UnsupportedQuery("GRID lo TO hi STEP s needs lo < hi and s > 0")
    bins = round((hi - lo) / step) + 1
    by = clauses["by"][0].lower() if "by" in clauses else None
    features = ensemble.features if ensemble else ()
    src = scored_source(tail, [response_text], terms, by, schema, rules, sites, features)
    query, response, eta, groups, conditions = src.query, src.outcomes[0], src.eta, src.groups, src.conditions
    if bins * len(groups) > MAX_BINS:
        raise UnsupportedQuery(f"the grid has {bins} points for {len(groups)} groups; at most {MAX_BINS} in all")
    fetch: list[dict[str, str]] = []
    by_expr, products, fit_query, fit_groups, values = src.by_expr, src.products, query, conditions, groups
    if ensemble is not None:  # the site fetches its rows, scores them in numpy, and runs the SQL below on them
        columns: dict[str, exp.Expr] = {"y": response, **{f"x{j}": src.resolved[f] for j, f in enumerate(features)}}
        rows = group_rows_sql(query, columns, [], src.by_expr, groups)
        fetch = [{"name": "rows", "sql": f"SELECT * FROM ({rows}) AS _rows WHERE gi IS NOT NULL", "when": "first step"}]
        fit_query, response, eta, gi, products = _scored_query(query)
        by_expr = gi if by else None  # the scored rows carry their group's index
        values = list(range(len(groups))) if by else groups
        fit_groups = [exp.EQ(this=gi.copy(), expression=exp.Literal.number(i)) for i in values] if by else []
    sql = _local_sql(fit_query, response, eta, products, by_expr, values, threshold, (lo, step, bins))
    scored = f" (over {SCORED}, the rows scored)" if ensemble else ""
    local = [
        {"name": "groups", "sql": sql[0], "when": f"first step{scored}"},
        {"name": "bins", "sql": sql[1], "when": f"first step{scored}"},
        *fetch,
    ]
    fit_design = Design(
        (DesignColumn("Intercept", exp.Literal.number(1)), DesignColumn("eta", eta)),
        exp.and_(
            *(exp.Not(this=exp.Is(this=exp.Paren(this=e.copy()), expression=exp.Null())) for e in (response, eta))
        ),
        (),
    )
    fits = []
    for i in range(len(groups)) if "without" not in clauses else []:
        where: exp.Expression | None = fit_query.where
        if fit_groups:
            cond = fit_groups[i].copy()
            where = cond if where is None else exp.And(this=exp.Paren(this=where.copy()), expression=cond)
        fit = Statement(statement.text, "LOGISTIC", "", "")
        group_query = dataclasses.replace(fit_query, where=where)
        fits.append(glm.plan_glm(fit, group_query, fit_design, response, response_text, None, None, rules).data)
    data = {
        "version": 1,
        "query": statement.text,
        "model": {
            "kind": "VALIDATE",
            "response": response_text,
            "coefficients": [[t.label, t.coef] for t in terms],
            "by": by,
            "groups": groups,
            "threshold": threshold,
            "terms": len(src.products) if ensemble is None else int(ensemble.leaves.size),
            "grid": [lo, hi, step, bins],
            **({"trees": ensemble.to_json(), "person": query.person is not None} if ensemble else {}),
        },
        "params": {"min_cell_size": rules.threshold, "bits": {"sums": FV}},
        "keys": [],
        "grouping_sets": [[]],
        "local": local,
        "fits": fits,
        "reveals": _reveals(),
    }
    # The query sets are the rows the statement scores (a 0/1 response and a score: a NULL in a
    # predictor's column, or in a feature of an ensemble that cannot route it, drops the row), per
    # BY group: two statements whose scored rows differ by one person through NULLs are compared
    # like two WHERE sets (as a fit's complete cases are: site_agent/models/glm.py).
    y = exp.Cast(this=src.outcomes[0].copy(), to=exp.DataType.build("DOUBLE"))
    scored_rows: exp.Expr = exp.In(this=y, expressions=[exp.convert(0.0), exp.convert(1.0)])
    needed = (
        [src.eta] if ensemble is None else [src.resolved[f] for f in features] if ensemble.format == "sklearn" else []
    )
    for e in needed:
        scored_rows = exp.and_(scored_rows, exp.Not(this=exp.Is(this=exp.Paren(this=e.copy()), expression=exp.Null())))
    sets = [exp.and_(scored_rows, c) for c in conditions] if conditions else [scored_rows]
    return with_ledger(Plan(data), query, sets)


SCORED = "_scored"
"""The scratch table of a tree ensemble's local step: the site's WHERE rows with their group,
outcome, person and score (``gi``, ``y``, ``person``, ``eta``), in a private in-memory DuckDB."""


def _scored_query(query: Any) -> tuple[Any, exp.Expression, exp.Expression, exp.Expression, list[exp.Expression]]:
    """The validated ``query`` moved onto :data:`SCORED` (its rows are the WHERE set already):
    (query, outcome, score, group index, term products) as the local SQL and the calibration
    fits take them, so both run unchanged on the scored rows."""
    source = exp.select("1").from_(exp.alias_(exp.to_table(SCORED), "_s", table=True))
    person = "_s.person" if query.person is not None else None
    moved = dataclasses.replace(query, source=source, where=None, person=person, derived=())
    return moved, exp.column("y", table="_s"), exp.column("eta", table="_s"), exp.column("gi", table="_s"), []


def group_rows_sql(
    query: Any,
    columns: dict[str, exp.Expr],
    products: list[exp.Expression],
    by: exp.Expr | None,
    groups: list[KeyValue],
) -> str:
    """The WHERE rows as SQL: ``gi`` (the row's group: 0 without BY, else the index of its BY
    value in the public domain, NULL outside it), ``person``, each of ``columns`` cast to DOUBLE
    under its name, and the score's term products ``t0``, ``t1``, ..."""
    double = exp.DataType.build("DOUBLE")
    if by is None:
        gi: exp.Expr = exp.Literal.number(0)
    else:
        gi = exp.Case(
            ifs=[
                exp.If(
                    this=exp.EQ(this=by.copy(), expression=exp.maybe_parse(_sql_literal(v), dialect=DIALECT)),
                    true=exp.Literal.number(i),
                )
                for i, v in enumerate(groups)
            ]
        )
    person: exp.Expression = exp.Literal.number(0)
    if query.person is not None:
        alias, column = query.person.split(".", 1)
        person = exp.column(column, table=alias)
    sel = query.source.copy()
    sel.set(
        "expressions",
        [
            exp.alias_(gi, "gi"),
            *(exp.alias_(exp.Cast(this=e.copy(), to=double), name) for name, e in columns.items()),
            exp.alias_(person, "person"),
            *(exp.alias_(exp.Cast(this=x.copy(), to=double), f"t{j}") for j, x in enumerate(products)),
        ],
    )
    if query.where is not None:
        sel = sel.where(query.where.copy())
    return total_sql(sel).sql(DIALECT)


def group_counts_sql(query: Any, terms: int) -> str:
    """Per group columns over rows with ``ok`` (complete) and ``y`` (the outcome, 0/1): rows of the
    WHERE set, complete cases, distinct persons, events, and per term j the persons with t_j
    non-zero and zero (``term_isolation``)."""

    def persons(cond: str) -> str:
        if query.person is None:
            return f"COUNT(CASE WHEN {cond} THEN 1 END)"
        return f"COUNT(DISTINCT CASE WHEN {cond} THEN person END)"

    support = "".join(
        f"{persons(f'ok AND t{j} <> 0')} AS nz{j}, {persons(f'ok AND t{j} = 0')} AS z{j}, " for j in range(terms)
    )
    return (
        f"COUNT(*) AS n_where, COUNT(CASE WHEN ok THEN 1 END) AS n, {persons('ok')} AS persons, {support}"
        "COALESCE(SUM(CASE WHEN ok THEN y END), 0) AS pos"
    )


def _local_sql(
    query: Any,
    response: exp.Expr,
    eta: exp.Expr,
    products: list[exp.Expression],
    by: exp.Expr | None,
    groups: list[KeyValue],
    threshold: float,
    grid: tuple[float, float, int],
) -> tuple[str, str]:
    """(per group counts and sums, per group and bin events and non-events) as SQL."""
    inner = group_rows_sql(query, {"y": response, "eta": eta}, products, by, groups)
    lo, step, bins = grid
    rows = (
        "SELECT *, y IS NOT NULL AND eta IS NOT NULL AND y IN (0.0, 1.0) AS ok, "
        "CASE WHEN eta >= 0 THEN 1.0 / (1.0 + EXP(-eta)) ELSE EXP(eta) / (1.0 + EXP(eta)) END AS p "
        f"FROM ({inner}) AS _rows WHERE gi IS NOT NULL"
    )
    thr = repr(threshold)
    groups_sql = (
        f"SELECT gi, {group_counts_sql(query, len(products))}, "
        f"COUNT(CASE WHEN ok AND y = 1 AND p >= {thr} THEN 1 END) AS tp, "
        f"COUNT(CASE WHEN ok AND y = 0 AND p >= {thr} THEN 1 END) AS fp, "
        f"COUNT(CASE WHEN ok AND y = 1 AND p < {thr} THEN 1 END) AS fn, "
        f"COUNT(CASE WHEN ok AND y = 0 AND p < {thr} THEN 1 END) AS tn, "
        "COALESCE(SUM(CASE WHEN ok THEN p END), 0) AS sum_p, "
        "COALESCE(SUM(CASE WHEN ok THEN (y - p) * (y - p) END), 0) AS sq "
        f"FROM ({rows}) AS _g GROUP BY gi"
    )
    scaled = f"(eta - CAST('{lo!r}' AS DOUBLE)) / CAST('{step!r}' AS DOUBLE)"
    bin_sql = f"CAST(LEAST(GREATEST(ROUND({scaled}), 0), {bins - 1}) AS BIGINT)"
    bins_sql = (
        f"SELECT gi, {bin_sql} AS bin, SUM(y) AS pos, COUNT(*) - SUM(y) AS neg "
        f"FROM ({rows}) AS _b WHERE ok GROUP BY gi, bin"
    )
    return groups_sql, bins_sql


def _reveals() -> list[dict[str, Any]]:
    committee = [
        ("local_failed", "sum of the sites' secret failure words (0: every local step ran)"),
        ("released", "per group: whether its persons, events and non-events each number at least k"),
        (
            "term_isolation",
            "whether a term of the score (for TREES, a leaf) is 0, or not 0, at 1..k-1 persons of a released group",
        ),
        ("confusion_small", "per group: whether a confusion cell lies in 1..k-1 (then all four are withheld)"),
        ("dropped_small", "per group: whether its dropped rows lie in 1..k-1 (then withheld)"),
        ("calibration", "per released group, the reveal points of its LOGISTIC fit of y on eta (rules, iterates)"),
    ]
    analyst = [
        ("n", "per released group: complete cases and events"),
        ("auc", "per released group: the AUC on the grid (ties 1/2)"),
        ("brier", "per released group: mean (y - p)^2"),
        ("citl", "per released group: mean y - mean p"),
        ("calibration", "per released group: intercept and slope of LOGISTIC y ~ eta (when its model rules pass)"),
        ("confusion", "per released group: TP, FP, FN, TN at the threshold (each 0 or >= k, else all withheld)"),
        ("dropped", "per released group: rows dropped for a missing or non-binary outcome or a NULL score"),
    ]
    return [{"name": n, "to": "committee", "what": w} for n, w in committee] + [
        {"name": n, "to": "analyst", "what": w} for n, w in analyst
    ]


# -- the local step ---------------------------------------------------------------------------
def _int_names(plan: Plan) -> list[str]:
    terms = int(plan.data["model"]["terms"])
    return [*INTS, *(name for j in range(terms) for name in (f"nz{j}", f"z{j}"))]


def _size(plan: Plan) -> int:
    m = plan.data["model"]
    g, bins = len(m["groups"]), int(m["grid"][3])
    return 1 + g * (len(_int_names(plan)) + len(FIXED)) + 2 * g * bins


def local_validate(plan: Plan, con: Any, holds_data: bool, params: dict[str, Any] | None) -> U64:
    """A site's vector: with ``params`` None the counts, sums and histograms of every group;
    with ``{"fit": i, "glm": ...}`` the local step of group i's calibration fit (:mod:`.glm`).
    Never raises: a failure gives zeros and a secret failure word."""
    if params is not None:
        fit = Plan(plan.data["fits"][int(params["fit"])])
        if "trees" not in plan.data["model"]:
            return glm.local_glm(fit, con, holds_data, params["glm"])
        try:  # the fit's SQL reads the scored rows (a failure there is glm's failure vector)
            scratch = _scratch(_scored_again(plan, con))
        except Exception:
            scratch = duckdb.connect()  # no _scored table: glm's step fails with its failure word
        try:
            return glm.local_glm(fit, scratch, holds_data, params["glm"])
        finally:
            scratch.close()
    try:
        if "trees" in plan.data["model"]:
            ints, sums, hist = _tree_counts(plan, con)
        else:
            ints, sums, hist = _sql_counts(plan, con, _int_names(plan))
        if not np.all(np.isfinite(sums)):
            raise ValueError("a sum is not finite")
        return np.concatenate(
            [encode_int([0]), encode_int(ints.ravel()), FixedPoint(FV).encode(sums.ravel()), encode_int(hist.ravel())]
        ).astype(np.uint64)
    except Exception:  # the engine or the data: every member fails alike, the site's log says nothing more
        failed = np.zeros(_size(plan), dtype=np.uint64)
        failed[0] = failure_word()
        return failed


def _sql_counts(plan: Plan, con: Any, names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the ints ``names`` per group, sums per group, histograms) from the two local SQL statements."""
    m = plan.data["model"]
    g, bins = len(m["groups"]), int(m["grid"][3])
    ints = np.zeros((g, len(names)), dtype=np.int64)
    sums = np.zeros((g, len(FIXED)))
    hist = np.zeros((2, g, bins), dtype=np.int64)
    rows = con.execute(plan.data["local"][0]["sql"]).fetchnumpy()
    index = np.asarray(rows["gi"], dtype=np.int64)
    for j, name in enumerate(names):
        ints[index, j] = np.rint(np.asarray(rows[name], dtype=np.float64)).astype(np.int64)
    for j, name in enumerate(FIXED):
        sums[index, j] = np.asarray(rows[name], dtype=np.float64)
    cells = con.execute(plan.data["local"][1]["sql"]).fetchnumpy()
    gi, b = np.asarray(cells["gi"], dtype=np.int64), np.asarray(cells["bin"], dtype=np.int64)
    hist[0, gi, b] = np.rint(np.asarray(cells["pos"], dtype=np.float64)).astype(np.int64)
    hist[1, gi, b] = np.rint(np.asarray(cells["neg"], dtype=np.float64)).astype(np.int64)
    return ints, sums, hist


def _floats(column: Any) -> np.ndarray:
    """A fetched column as float64, NaN for NULL (a masked entry or None)."""
    values = np.ma.asarray(column)
    if values.dtype.kind in "biuf":
        numbers: np.ndarray = np.ma.filled(values.astype(np.float64), np.nan)
        return numbers
    data = np.asarray(np.ma.getdata(values), dtype=object)
    data[np.ma.getmaskarray(values)] = None
    floats: np.ndarray = pd.to_numeric(pd.Series(data, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    return floats


def _scored_rows(plan: Plan, con: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A tree ensemble's local step, in the clear at the site: its WHERE rows fetched (group,
    outcome, person, features) and scored in numpy (:func:`.trees.scores`, every row at once),
    as the table :data:`SCORED` (:func:`_scratch`) on which the plan's SQL (counts, grid,
    calibration fits) then runs as on a linear predictor. Also returns, per row, the group, the
    person (an integer code, -1 for none), whether the row is complete (outcome 0 or 1 and a
    score: the SQL's ``ok``) and its leaf in every tree."""
    m = plan.data["model"]
    ens = trees.from_plan(m["trees"])
    rows = con.execute(plan.data["local"][2]["sql"]).fetchnumpy()
    gi = np.asarray(rows["gi"], dtype=np.int64)
    y = _floats(rows["y"])
    x = np.column_stack([_floats(rows[f"x{j}"]) for j in range(len(ens.features))]).reshape(gi.size, -1)
    eta, _, leaves = trees.scores(ens, x)
    if m["person"]:
        person = pd.factorize(pd.Series(np.ma.getdata(rows["person"]), dtype=object), use_na_sentinel=True)[0]
        person[np.ma.getmaskarray(rows["person"])] = -1
    else:
        person = np.arange(gi.size)
    frame = pd.DataFrame(
        {
            "gi": gi,
            "y": pd.array(y, dtype="Float64"),  # NaN -> NULL
            "eta": pd.array(eta, dtype="Float64"),
            "person": pd.Series(person, dtype="Int64").mask(person < 0),
        }
    )
    ok = ~np.isnan(y) & ~np.isnan(eta) & ((y == 0) | (y == 1))
    with _SCORED_LOCK:  # for this plan's calibration steps at this connection (_scored_again)
        kept = [entry for entry in _LAST_SCORED if entry[1] is not con][-(_SCORED_KEPT - 1) :]
        _LAST_SCORED[:] = [*kept, (plan.digest(), con, frame)]
    return frame, gi, person, ok, leaves


_SCORED_KEPT = 3
_LAST_SCORED: list[tuple[str, Any, pd.DataFrame]] = []
"""(plan digest, connection, scored rows) of the last first step of a tree ensemble at each of
the last :data:`_SCORED_KEPT` connections in this process (an agent has one; an in-process run
three). The calibration steps reuse the scores instead of scoring every Newton step again; the
next first step at a connection replaces its entry, so a statement run again later scores its
rows afresh."""
_SCORED_LOCK = threading.Lock()


def _scored_again(plan: Plan, con: Any) -> pd.DataFrame:
    """The scored rows of a calibration step: those of this plan's first step at this connection
    when they are the last scored in this process, else scored again."""
    digest = plan.digest()
    with _SCORED_LOCK:
        for last, last_con, frame in _LAST_SCORED:
            if last == digest and last_con is con:
                return frame
    return _scored_rows(plan, con)[0]


def _scratch(frame: pd.DataFrame) -> Any:
    """A private in-memory DuckDB holding the scored rows as :data:`SCORED`."""
    scratch = duckdb.connect()
    scratch.register(SCORED, frame)
    return scratch


def _leaf_support(plan: Plan, gi: np.ndarray, person: np.ndarray, ok: np.ndarray, leaves: np.ndarray) -> np.ndarray:
    """Per group, for every leaf j: the persons with a complete row at the leaf (``nz_j``) and
    the others (``z_j``): the terms of ``term_isolation``. Within a tree the leaves partition
    the rows, so a leaf holding 1..k-1 persons is what singles someone out."""
    m = plan.data["model"]
    ens = trees.from_plan(m["trees"])
    g, size, n_leaves = len(m["groups"]), int(person.max(initial=0)) + 1, int(ens.leaves.size)
    mask = ok & (person >= 0)
    one_row_each = np.unique(person[mask]).size == int(mask.sum())  # then persons are rows

    def persons(cell: np.ndarray, cells: int) -> np.ndarray:
        if one_row_each:
            return np.bincount(cell[mask], minlength=cells)
        return np.bincount(np.unique(cell[mask] * size + person[mask]) // size, minlength=cells)

    ordinal = np.full(ens.feature.size, -1, dtype=np.int64)
    ordinal[ens.leaves] = np.arange(n_leaves)
    nz = np.zeros((g, n_leaves), dtype=np.int64)
    for t in range(ens.roots.size):  # one pass per tree, every row at once
        leaf = ordinal[np.maximum(leaves[:, t], 0)]
        nz += persons(gi * n_leaves + leaf, g * n_leaves).reshape(g, n_leaves)
    return np.stack([nz, persons(gi, g)[:, None] - nz], axis=2).reshape(g, -1)  # nz0, z0, nz1, z1, ...


def _tree_counts(plan: Plan, con: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_sql_counts` for a tree ensemble: the plan's SQL on the scored rows
    (:func:`_scored_rows`), and the leaves' person counts beside the counts of each group."""
    frame, gi, person, ok, leaves = _scored_rows(plan, con)
    scratch = _scratch(frame)
    try:
        ints, sums, hist = _sql_counts(plan, scratch, list(INTS))
    finally:
        scratch.close()
    return np.concatenate([ints, _leaf_support(plan, gi, person, ok, leaves)], axis=1), sums, hist


# -- the committee's program ------------------------------------------------------------------
def release_groups(
    p: Party, col: dict[str, AShare], support: list[str], counts: AShare, k: int
) -> Protocol[tuple[list[int], list[bool]] | None]:
    """The release rule of a validation's groups, on shares (module docstring, step 3): the
    groups whose persons, events (``pos``) and non-events (``n - pos``) each number at least k,
    and for each of ``counts`` whether it lies in 1..k-1 (then withheld); None when a term of
    the score (``support``: persons with it non-zero, zero) isolates 1..k-1 persons of a released
    group (``term_isolation``: refuse the statement). One bit per group and count is opened."""
    g = col["n"].shape[0]
    neg = col["n"] - col["pos"]
    checks = [
        Check("group", AShare.concat([col["persons"][i : i + 1], col["pos"][i : i + 1], neg[i : i + 1]]), k)
        for i in range(g)
    ]
    withheld = yield from model_checks(p, checks)
    small = yield from small_counts(p, counts, k)
    released = [i for i in range(g) if not withheld[i]]
    if released and support:  # term_isolation, on the released groups
        isolated = yield from small_counts(p, AShare.concat([col[name][np.asarray(released)] for name in support]), k)
        if any(isolated):
            return None
    return released, small


def group_bands(p: Party, plan: Plan, n: AShare) -> Protocol[dict[str, Any]]:
    """For a validation held for output review, each group's persons ``n`` (one per BY group)
    as a band for the DPOs (``{"bands": ...}``; ``{}`` otherwise)."""
    m = plan.data["model"]
    labels = ["all"] if m["by"] is None else [f"{m['by']} = {g}" for g in m["groups"]]
    return (yield from held_bands(p, plan.data, labels, n))


def validate_program(p: Party, plan: Plan, site: SiteStep) -> Protocol[Outcome]:
    """The committee's protocol (module docstring, steps 2-5)."""
    m = plan.data["model"]
    g, bins, k = len(m["groups"]), int(m["grid"][3]), int(plan.data["params"]["min_cell_size"])
    size = _size(plan)
    mine = yield from local(p, lambda: site(None))
    shared = yield from site_shares(p, mine, size)
    pooled = pool_sites(shared)
    opened = yield from ar.open_all(p, pooled[:1])
    if int(opened[0]) != 0:
        return empty_outcome(local_failed=True)
    names = _int_names(plan)
    at = 1 + g * len(names)
    ints = pooled[1:at].reshape(g, len(names))
    sums = pooled[at : at + g * len(FIXED)].reshape(g, len(FIXED))
    hist = pooled[at + g * len(FIXED) :].reshape(2, g, bins)
    col = {name: ints[:, j] for j, name in enumerate(names)}
    neg = col["n"] - col["pos"]
    cells = AShare.concat([col[c] for c in ("tp", "fp", "fn", "tn")])  # cell-major: (4 g,)
    release = yield from release_groups(
        p, col, names[len(INTS) :], AShare.concat([cells, col["n_where"] - col["n"]]), k
    )
    if release is None:
        return empty_outcome(refused="term_isolation", message=ModelRules(k).message("term_isolation"))
    released, small = release
    review = yield from group_bands(p, plan, col["n"])
    confusion_ok = [not any(small[c * g + i] for c in range(4)) for i in range(g)]
    dropped_ok = [not small[4 * g + i] for i in range(g)]
    outputs: list[tuple[str, AShare]] = []
    calibration: list[dict[str, Any]] = []
    if released:
        pos, negs = hist[0], hist[1]
        below = negs.cumsum(axis=1) - negs  # non-events in lower bins
        weight = below.lshift(1) + negs
        prod = yield from ar.mul(p, pos.ravel(), weight.ravel())
        num = prod.reshape(g, bins).sum(axis=1)
        pn = yield from ar.mul(p, col["pos"], neg)
        rel = np.asarray(released)
        nums = AShare.concat([num[rel], sums[:, 1][rel], col["pos"][rel].lshift(FV) - sums[:, 0][rel]])
        dens = AShare.concat([pn[rel].lshift(1), col["n"][rel], col["n"][rel]])
        r = rel.size
        offsets = np.concatenate([np.zeros(r), np.full(r, -FV), np.full(r, -FV)]).astype(np.int64)
        q = yield from divide_float(p, nums, dens, offsets)
        for part in FLOAT_PARTS:
            outputs.append((f"metrics.{part}", getattr(q, part)))
        outputs.append(("n", AShare.concat([col["n"][rel], col["pos"][rel]])))
        conf = [i for i in released if confusion_ok[i]]
        if conf:
            outputs.append(("confusion", AShare.concat([col[c][np.asarray(conf)] for c in ("tp", "fp", "fn", "tn")])))
        drop = [i for i in released if dropped_ok[i]]
        if drop:
            outputs.append(("dropped", (col["n_where"] - col["n"])[np.asarray(drop)]))
        for i in released if plan.data["fits"] else []:
            fit = Plan(plan.data["fits"][i])
            _, meta = yield from glm.glm_program(
                p,
                fit,
                lambda prm, i=i: site({"fit": i, "glm": prm}),  # type: ignore[misc]
            )
            if meta.get("local_failed"):
                return empty_outcome(local_failed=True)
            if meta.get("refused"):
                calibration.append({"refused": meta["refused"]})
            else:
                calibration.append({"coef": meta["coef"], "converged": meta["converged"]})
    meta = {
        "plan": plan.data,
        "digest": plan.digest(),
        "released": released,
        "confusion": [i for i in released if confusion_ok[i]],
        "dropped": [i for i in released if dropped_ok[i]],
        "calibration": calibration,
        "layout": [[name, int(x.size)] for name, x in outputs],
        **review,
    }
    if not outputs:
        return AShare(np.zeros((2, 0), dtype=np.uint64)), meta
    return AShare.concat([x.ravel() for _, x in outputs]), meta


# -- the analyst's side -----------------------------------------------------------------------
COLUMNS = ["n", "events", "auc", "brier", "citl", "cal_intercept", "cal_slope", "tp", "fp", "fn", "tn", "n_dropped"]


def assemble_validate(meta: dict[str, Any], shares: list[AShare]) -> pd.DataFrame:
    """One row per group (``all`` without BY): the metrics, NaN where withheld; column
    ``released`` False for a group below the release rule."""
    plan, values = opened_outputs(meta, shares)
    m = plan.data["model"]
    index = pd.Index(["all"] if m["by"] is None else m["groups"], name=m["by"] or "group")
    frame = pd.DataFrame(np.nan, index=index, columns=COLUMNS)
    frame["released"] = False
    released = [int(i) for i in meta["released"]]
    if released:
        r = len(released)
        metrics = opened_floats(values, "metrics")
        counts = decode_int(values["n"])
        for j, i in enumerate(released):
            cal = meta["calibration"][j] if meta["calibration"] else {}
            row = {
                "n": counts[j],
                "events": counts[r + j],
                "auc": metrics[j],
                "brier": metrics[r + j],
                "citl": metrics[2 * r + j],
                "cal_intercept": cal["coef"][0] / 2.0**glm.FB if "coef" in cal else np.nan,
                "cal_slope": cal["coef"][1] / 2.0**glm.FB if "coef" in cal else np.nan,
            }
            for name, value in row.items():
                frame.iloc[i, frame.columns.get_loc(name)] = value
            frame.iloc[i, frame.columns.get_loc("released")] = True
        conf = [int(i) for i in meta["confusion"]]
        if conf:
            cells = decode_int(values["confusion"]).reshape(4, len(conf))
            for j, i in enumerate(conf):
                for c, name in enumerate(("tp", "fp", "fn", "tn")):
                    frame.iloc[i, frame.columns.get_loc(name)] = cells[c, j]
        drop = [int(i) for i in meta["dropped"]]
        if drop:
            dropped = decode_int(values["dropped"])
            for j, i in enumerate(drop):
                frame.iloc[i, frame.columns.get_loc("n_dropped")] = dropped[j]
    frame.attrs.update(
        {
            "model": "VALIDATE",
            "coefficients": dict((str(t), float(c)) for t, c in m["coefficients"]),
            **({"trees": _summary(m["trees"])} if "trees" in m else {}),
            "threshold": m["threshold"],
            "grid": {"lo": m["grid"][0], "hi": m["grid"][1], "step": m["grid"][2]},
            "calibration_refused": {
                str(index[i]): cal["refused"]
                for i, cal in zip(released, meta["calibration"] or [{}] * len(released), strict=True)
                if "refused" in cal
            },
            "plan_digest": meta["digest"],
            "reveals": [{"name": r["name"], "to": r["to"], "what": r["what"]} for r in plan.data["reveals"]],
        }
    )
    return frame


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    """A tree ensemble in a few words: format, estimator, trees, nodes, depth, features."""
    return {
        "format": data["format"],
        "estimator": data["estimator"],
        "trees": len(data["roots"]),
        "nodes": len(data["nodes"][0]),
        "depth": data["depth"],
        "features": data["features"],
    }


def explain_validate(plan: Plan) -> str:
    """The plan in words: local SQL, the MPC steps, every reveal point."""
    d = plan.data
    m = d["model"]
    lo, hi, step, bins = m["grid"]
    lines = [f"Plan {plan.digest()[:16]} for:", *("    " + t for t in d["query"].strip().splitlines()), ""]
    if "trees" in m:
        t = _summary(m["trees"])
        model = (
            f"a {t['estimator']} tree ensemble ({t['format']} format: {t['trees']} trees, {t['nodes']} nodes, "
            f"depth {t['depth']}, features {', '.join(t['features'])}; scored at each site in numpy)"
        )
    else:
        model = "a logistic model (public coefficients)"
    lines.append(
        f"External validation of {model} on {len(m['groups'])} group(s); "
        f"threshold {m['threshold']}; score eta binned on the grid {lo:g} to {hi:g} step {step:g} "
        f"({bins} points, ties within a step count 1/2)."
    )
    lines.append(
        f"Release rule: a group needs at least {d['params']['min_cell_size']} persons, events and non-events; "
        "confusion cells 0 or at least k (else all four withheld)."
    )
    lines += ["", "1. Local step at every site, in the clear, on its own data:"]
    for q in d["local"]:
        lines.append(f"   [{q['name']}]: ({q['when']}) {q['sql']}")
    lines += [
        "",
        "2. Secret-shared to the committee: per group the counts and sums, per group and grid point events and "
        "non-events",
        "3. MPC steps: pool; release bits; AUC = sum pos (2 neg_below + neg) / (2 P N) (one product, one division); "
        "Brier and CITL (one division); per released group a LOGISTIC fit of y on eta (Newton on shares, glm)",
        "",
        "4. Reveal points:",
    ]
    for r in d["reveals"]:
        lines.append(f"   [{r['to']}] {r['name']}: {r['what']}")
    return "\n".join(lines)


MODELS["VALIDATE"] = ModelKind(compile_validate, local_validate, validate_program, assemble_validate, explain_validate)
