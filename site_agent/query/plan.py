"""Compile a validated query into a plan: local SQL, inputs to share, MPC steps, reveal points.

The plan is plain JSON-able data; :meth:`Plan.digest` is the sha256 of its canonical JSON
(sorted keys, no whitespace), so every site compiling the same text against the same schema and
combined rules gets the same digest, and the committee can compare digests before any share
moves. The digest covers the query text, the public cell grid, every local SQL statement, every
MPC step with its parameters and every reveal point.

Cells. The group keys' public domains span a grid of *base cells* (row-major over the keys);
sites compute pre-aggregates per base cell. ROLLUP/CUBE margins are *output cells* formed inside
MPC by summing base cells, so no site computes or reveals a margin of its own.

Per-site breakdowns. The ``SITE`` key (domain: the committee's site names, in committee order)
never enters the local SQL, which stays identical at every site: the local SQL groups by the
other keys only (the *local cells*), and :func:`~site_agent.query.execute.local_preaggregates`
places a site's local cells in its own slice of the base-cell grid (the fill value elsewhere),
so pooling gives per-site values and a margin over SITE the pooled total.

Pre-aggregates (per site and base cell): row count; per value expression its non-NULL count
and sum; for variances the site mean and M2 = sum (x - mean_site)^2 (pooled as
sum M2_i + sum n_i (mean_i - mean)^2, never as sum of squares minus squared sum); a histogram on
the column's public grid for quantiles; the site maximum (or negated minimum) for MAX/MIN;
COUNT(DISTINCT) per site (summed: distinct within each site, see docs).

Statement kind: ``per_site_breakdown`` when a key is ``SITE``, else ``aggregate``; compiling
refuses a kind the combined rules do not allow (naming the site and rule ``statement_kinds``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import sqlglot
import sqlglot.expressions as exp

from ..errors import UnsupportedQuery
from ..privacy import dominance
from ..privacy.release import ReleasePlanner
from .catalog import DisclosureRules, Schema
from .failsafe import check_input, check_reveal, check_step, total, total_case, total_sql, with_other
from .parse import DIALECT, Aggregate, Query, parse_query

if TYPE_CHECKING:
    from .dp import DpRequest

AGGREGATE = "aggregate"
PER_SITE_BREAKDOWN = "per_site_breakdown"

PLAN_VERSION = 1
FRAC_BITS = 16  # fixed-point bits of shared sums, means and M2 (see docs/query-language.md)
COUNT_BITS = 24  # pooled counts per cell stay below 2^24 (16.7 million rows)
Z95 = 1.959963984540054  # standard normal 0.975 quantile
SECONDARY_PASSES = 3
EXTREME_FILL = -(2.0**40)  # stands in for "no value" in MIN/MAX pre-aggregates


@dataclass(frozen=True)
class Plan:
    """A compiled query. ``data`` is the JSON form; everything else reads from it."""

    data: dict[str, Any]

    def canonical_json(self) -> str:
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def digest(self) -> str:
        """sha256 of the canonical JSON: equal at every site for the same text, schema, rules."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def keys(self) -> list[dict[str, Any]]:
        return list(self.data["keys"])

    @property
    def grouping_sets(self) -> list[list[int]]:
        return [list(s) for s in self.data["grouping_sets"]]

    @property
    def dims(self) -> list[int]:
        return [len(k["domain"]) for k in self.data["keys"]]

    @property
    def base_cells(self) -> int:
        out = 1
        for d in self.dims:
            out *= d
        return out

    @property
    def site_key(self) -> int | None:
        """Position of the ``SITE`` key among the keys, or None."""
        return next((i for i, k in enumerate(self.data["keys"]) if k.get("site")), None)

    @property
    def kind(self) -> str:
        """The statement kind site policies allow or refuse (``statement_kinds``)."""
        if "kind" in self.data:  # a model statement's plan names its own kind
            return str(self.data["kind"])
        return PER_SITE_BREAKDOWN if self.site_key is not None else AGGREGATE

    @property
    def local_cells(self) -> int:
        """Cells of the local SQL: the base grid without the ``SITE`` key."""
        out = 1
        for i, d in enumerate(self.dims):
            if i != self.site_key:
                out *= d
        return out

    def input_shape(self, name: str) -> tuple[int, ...]:
        """Shape of one site's input ``name``: per base cell (and grid bin, for histograms), or per
        output cell (and rank) for the dominance rule's inputs, which a site forms per margin."""
        spec = next(s for s in self.data["inputs"] if s["name"] == name)
        cells = self.out_cells if spec.get("cells") == "out" else self.base_cells
        for q in self.data["local"]:
            if q["name"] == spec["query"] and "bins" in q:
                return (cells, int(q["bins"]))
        return (cells, int(spec["width"])) if "width" in spec else (cells,)

    @property
    def out_cells(self) -> int:
        total = 0
        for s in self.grouping_sets:
            n = 1
            for i in s:
                n *= self.dims[i]
            total += n
        return total


def compile_query(
    text: str,
    schema: Schema,
    rules: DisclosureRules,
    sites: tuple[str, ...] | None = None,
    dp: DpRequest | None = None,
    params: dict[str, Any] | None = None,
) -> Plan:
    """Parse, validate and plan ``text``: the one entry point every site calls.

    ``sites`` are the committee's site names in committee order, the public domain of ``SITE``;
    every member passes the same tuple, so the digest stays equal. Without them ``SITE`` is
    refused (``UnsupportedQuery``). A model statement (``LINEAR y ~ x FROM t``, see
    :mod:`site_agent.models.statement`) compiles to its model's plan; ``dp`` asks for a DP plan
    (:mod:`.dp`): noise instead of suppression. ``params`` are the signed envelope's named
    parameters, read by the model statements that name one (``TREES(:model)``).
    """
    if sites is not None and (len(set(sites)) != len(sites) or not all(isinstance(s, str) and s for s in sites)):
        raise ValueError(f"sites must be distinct non-empty names, not {sites!r}")
    from ..models.plan_statements import find_statement  # statements planned as aggregates (KAPLAN_MEIER)
    from ..models.statement import compile_statement  # model statements (LINEAR ... FROM ...)

    statement = find_statement(text)
    model = compile_statement(text, schema, rules, sites, params) if statement is None else None
    if dp is not None and (model is not None or statement is not None):
        raise UnsupportedQuery("DP mode answers SELECT queries only; model statements are answered exactly")
    if model is not None:
        return model
    if statement is not None:
        return statement.compile(text, schema, rules, sites)
    query = parse_query(text, schema, rules, sites)
    if dp is not None:
        from .dp import build_dp_plan  # dp builds on this module's helpers

        return build_dp_plan(query, rules, schema, dp)
    return build_plan(query, rules)


def _sql(e: exp.Expression) -> str:
    return e.sql(DIALECT)


def _key_index(expr: exp.Expression, domain: tuple[Any, ...], other: bool) -> exp.Expression:
    """CASE mapping a key value to its position in the public ``domain``.

    Each comparison is total: a key that cannot be evaluated on a row counts as NULL there.
    With ``other``, a NULL or out-of-domain value takes the position after the domain, the
    key's ``(other)`` cell.
    """
    ifs = []
    expr = total_case(expr)
    for i, value in enumerate(domain):
        if value is None:
            cond: exp.Expr = exp.Is(this=total(expr.copy()), expression=exp.Null())
        else:
            lit = exp.Boolean(this=value) if isinstance(value, bool) else exp.convert(value)
            cond = total(exp.EQ(this=exp.Paren(this=expr.copy()), expression=lit))
        ifs.append(exp.If(this=cond, true=exp.Literal.number(i)))
    return exp.Case(ifs=ifs, default=exp.Literal.number(len(domain)) if other else None)


class _Builder:
    """Accumulates local select items, inputs, steps and reveals for one plan."""

    def __init__(self, query: Query, rules: DisclosureRules) -> None:
        self.query = query
        self.rules = rules
        self.items: list[tuple[str, exp.Expression]] = []  # local pre-aggregates (name, expression)
        self.inputs: list[dict[str, Any]] = []
        self.histograms: list[dict[str, Any]] = []
        self.local: dict[str, str] = {}  # local count SQL -> input name
        self.pool: list[str] = []
        self.steps: dict[str, list[dict[str, Any]]] = {}
        self.reveals: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self.dominance: list[dict[str, Any]] = []  # the dominance rule's local queries (contribution SQL)
        self.differences = dominance.Differences()  # the summed outputs' query sets, for their differences
        self._add_input("n_rows", exp.Count(this=exp.Star()), "int", 0)
        self.local[_sql(exp.Count(this=exp.Star()))] = "n_rows"
        person = None
        if query.person is not None:
            alias, column = query.person.split(".", 1)
            person = exp.column(column, table=alias)
        self.release = ReleasePlanner(person, self.count_input)

    def _add_input(self, name: str, expr: exp.Expression, encoding: str, fill: float) -> str:
        self.items.append((name, expr))
        self.inputs.append({"name": name, "query": "cells", "column": name, "encoding": encoding, "fill": fill})
        self.pool.append(name)
        return name

    def count_input(self, hint: str, expr: exp.Expression) -> str:
        """A local count pre-aggregate, one input per distinct expression."""
        key = _sql(expr)
        if key not in self.local:
            self.local[key] = self._add_input(f"{hint}{len(self.local)}", expr, "int", 0)
        return self.local[key]

    def count_of(self, value: exp.Expression) -> str:
        return self.count_input("c", exp.Count(this=value.copy()))

    def step(self, op: str, item: dict[str, Any]) -> None:
        self.steps.setdefault(op, []).append(item)

    def reveal(self, output: str, value: str, encoding: str, support: int, what: str) -> str:
        name = f"{output}:{value}"
        self.reveals.append(
            {
                "name": name,
                "value": value,
                "encoding": encoding,
                "support": support,
                "shape": "unsuppressed cells",
                "what": what,
            }
        )
        return name

    def count_reveal(self, output: str, value: str, support: int, what: str) -> str:
        """The reveal of a count; under ``round_counts`` = b, of the count rounded to a multiple
        of b on shares (a ``round`` step), so the exact count is never opened."""
        base = self.rules.round_counts
        if base:
            rounded = f"{value}_round{base}"
            if not any(item["out"] == rounded for item in self.steps.get("round", [])):
                self.step("round", {"out": rounded, "in": value})
            value, what = rounded, f"{what}, rounded to base {base}"
        return self.reveal(output, value, "int", support, what)

    def dominance_flags(self, agg: Aggregate) -> tuple[str, ...]:
        """Under the policy's dominance rule, the flags that withhold the cells of a sum (SUM, AVG,
        variances, RATE's person-time) a few persons dominate, or whose difference with an
        earlier sum of the same column they dominate; one local query and flag per distinct
        contribution (:mod:`site_agent.privacy.dominance`)."""
        if self.rules.dominance is None or agg.kind not in ("sum", "avg", "var", "std", "rate"):
            return ()
        return tuple(dict.fromkeys(self._dominance_item(c) for c in self.differences.contributions(agg.branches)))

    def _dominance_item(self, contrib: exp.Expression) -> str:
        """The flag of the dominance check of one contribution: its local query, inputs and step item."""
        for d in self.dominance:
            if _sql(d["expr"]) == _sql(contrib):
                return str(d["out"])
        assert self.rules.dominance is not None
        if len(self.dominance) == dominance.MAX_CHECKS:
            raise UnsupportedQuery(
                f"under the dominance rule a query may have at most {dominance.MAX_CHECKS} sums and differences "
                "of sums checked; split the query"
            )
        name = f"dom{len(self.dominance)}"
        n = self.rules.dominance[0]
        self.dominance.append({"name": name, "expr": contrib, "out": f"{name}_flag"})
        fields: tuple[tuple[str, str, dict[str, int]], ...] = (
            ("top", "fixed", {"width": n}),
            ("total", "fixed", {}),
            ("over", "int", {}),
        )
        for column, encoding, extra in fields:
            spec = {"name": f"{name}_{column}", "query": name, "column": column, "encoding": encoding, "fill": 0}
            self.inputs.append({**spec, "cells": "out", **extra})
        item = {"out": f"{name}_flag", "top": f"{name}_top", "total": f"{name}_total", "over": f"{name}_over"}
        self.step("dominance", item)
        return f"{name}_flag"

    def add(self, i: int, agg: Aggregate) -> None:
        name, tag = agg.name, f"a{i}"
        out: dict[str, Any] = {"name": name, "kind": agg.kind, "reveals": []}
        arg = agg.args[0] if agg.args else None
        flags = (f"{tag}_q_bad",) if agg.kind == "quantile" else ()
        counts_only = agg.kind in ("count_star", "count", "count_distinct")
        argument = agg.args[-1] if agg.args else None  # RATE: its person-time
        out["support"] = sup = self.release.row(agg.branches, argument, counts_only, flags, self.dominance_flags(agg))
        if agg.kind == "count_star":
            out["reveals"].append(self.count_reveal(name, "n_rows", sup, "pooled row count"))
        elif agg.kind == "count":
            assert arg is not None
            c = self.count_of(arg)
            out["reveals"].append(self.count_reveal(name, c, sup, f"pooled count of {_sql(arg)}"))
        elif agg.kind == "count_distinct":
            assert arg is not None
            d = self._add_input(f"{tag}_distinct", exp.Count(this=exp.Distinct(expressions=[arg.copy()])), "int", 0)
            out["reveals"].append(self.count_reveal(name, d, sup, f"sum over sites of distinct {_sql(arg)}"))
        elif agg.kind in ("sum", "avg", "proportion", "var", "std"):
            assert arg is not None
            c = self.count_of(arg)
            frac = 0 if agg.kind == "proportion" else FRAC_BITS
            s = self._add_input(f"{tag}_sum", exp.Sum(this=arg.copy()), "int" if frac == 0 else "fixed", 0)
            if agg.kind == "sum":
                out["reveals"].append(self.reveal(name, s, "fixed", sup, f"pooled sum of {_sql(arg)}"))
            elif agg.kind in ("avg", "proportion"):
                self.step("divide", {"out": f"{tag}_mean", "num": s, "den": c, "num_frac": frac, "den_frac": 0})
                out["reveals"].append(self.reveal(name, f"{tag}_mean", "float", sup, f"pooled mean of {_sql(arg)}"))
                if agg.kind == "proportion":
                    self.step("wilson", {"out": f"{tag}_ci", "x": s, "n": c})
                    what = "Wilson 95% confidence limits"
                    out["reveals"].append(self.reveal(name, f"{tag}_ci_low", "float", sup, f"lower {what}"))
                    out["reveals"].append(self.reveal(name, f"{tag}_ci_high", "float", sup, f"upper {what}"))
            else:
                mean = self._add_input(f"{tag}_mean_site", exp.Avg(this=arg.copy()), "fixed", 0)
                m2 = self._add_input(
                    f"{tag}_m2_site",
                    exp.Mul(this=exp.VariancePop(this=arg.copy()), expression=exp.Count(this=arg.copy())),
                    "fixed",
                    0,
                )
                self.pool.remove(mean)
                self.pool.remove(m2)
                self.step("mean_fixed", {"out": f"{tag}_pmean", "sum": s, "count": c})
                self.step(
                    "pool_m2", {"out": f"{tag}_m2", "n": c, "mean": mean, "m2": m2, "pooled_mean": f"{tag}_pmean"}
                )
                self.step(
                    "divide",
                    {
                        "out": f"{tag}_var",
                        "num": f"{tag}_m2",
                        "den": c,
                        "den_minus": agg.ddof,
                        "num_frac": FRAC_BITS,
                        "den_frac": 0,
                    },
                )
                value = f"{tag}_var"
                if agg.kind == "std":
                    self.step("sqrt", {"out": f"{tag}_std", "in": value})
                    value = f"{tag}_std"
                kind = "standard deviation" if agg.kind == "std" else "variance"
                out["reveals"].append(self.reveal(name, value, "float", sup, f"pooled {kind} of {_sql(arg)}"))
        elif agg.kind == "quantile":
            assert arg is not None and agg.grid is not None and agg.q is not None
            hist = self._histogram(arg, agg.grid)
            q = Fraction(agg.q).limit_denominator(10_000)
            if abs(float(q) - agg.q) > 1e-12:
                raise UnsupportedQuery(f"{name}: the quantile needs at most 4 decimal places")
            self.step(
                "quantile",
                {"out": f"{tag}_q", "hist": hist, "q": [q.numerator, q.denominator], "grid": list(agg.grid)},
            )
            out["reveals"].append(
                self.reveal(name, f"{tag}_q", "fixed", sup, f"type-7 quantile {agg.q} of {_sql(arg)} on its grid")
            )
        elif agg.kind in ("min", "max"):
            assert arg is not None
            expr = exp.Max(this=arg.copy()) if agg.kind == "max" else exp.Neg(this=exp.Min(this=arg.copy()))
            m = self._add_input(f"{tag}_extreme_site", expr, "fixed", EXTREME_FILL)
            self.pool.remove(m)
            self.step("extreme", {"out": f"{tag}_extreme", "in": m, "negate": agg.kind == "min"})
            out["reveals"].append(
                self.reveal(name, f"{tag}_extreme", "fixed", sup, f"pooled {agg.kind} of {_sql(arg)}")
            )
        elif agg.kind == "rate":
            events, pt = agg.args
            e = self._add_input(f"{tag}_events", exp.Sum(this=events.copy()), "int", 0)
            t = self._add_input(f"{tag}_time", exp.Sum(this=pt.copy()), "fixed", 0)
            out["per"] = agg.per
            self.step("divide", {"out": f"{tag}_rate", "num": e, "den": t, "num_frac": 0, "den_frac": FRAC_BITS})
            self.step("byar", {"out": f"{tag}_ci", "events": e, "time": t})
            out["reveals"].append(self.reveal(name, f"{tag}_rate", "float", sup, f"{_sql(events)} per {_sql(pt)}"))
            what = "Byar 95% confidence limits of the rate"
            out["reveals"].append(self.reveal(name, f"{tag}_ci_low", "float", sup, f"lower {what}"))
            out["reveals"].append(self.reveal(name, f"{tag}_ci_high", "float", sup, f"upper {what}"))
        self.outputs.append(out)

    def _histogram(self, col: exp.Expression, grid: tuple[float, float, float]) -> str:
        name = f"hist{len(self.histograms)}"
        for h in self.histograms:
            if h["value"] == _sql(col) and h["grid"] == list(grid):
                return str(h["name"])
        self.histograms.append({"name": name, "value": _sql(col), "grid": list(grid), "expr": col})
        self.inputs.append({"name": name, "query": name, "column": "n", "encoding": "int", "fill": 0})
        self.pool.append(name)
        return name


def _statement(query: Query, sel: exp.Select) -> str:
    """A local statement's SQL from ``sel``, a tree built for it alone (changed in place, not
    copied again): derived columns written out, every analyst expression made total."""
    return str(total_sql(_expand(query, sel), copy=False).sql(DIALECT, copy=False))


def _expand(query: Query, sel: exp.Select) -> exp.Select:
    """The local SELECT (changed in place) with each derived column the query reads written as its
    schema expression (the sites store no derived column; see
    :func:`site_agent.query.parse.derived_expression`), made total like an analyst's expression:
    a row on which it raises has NULL there, in a group key too, so no failure depends on a row."""
    if not query.derived:
        return sel
    bodies = dict(query.derived)

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.table:
            body = bodies.get(f"{node.table.lower()}.{node.name.lower()}")
            if body is not None:
                return exp.Paren(this=total(sqlglot.parse_one(body, read=DIALECT)))  # NULL where it raises
        return node

    out = sel.transform(swap, copy=False)
    assert isinstance(out, exp.Select)
    return out


def _local_sql(query: Query, items: list[tuple[str, exp.Expression]], cell: exp.Expression) -> str:
    sel = query.source.copy()
    sel.set("expressions", [exp.alias_(cell.copy(), "cell")] + [exp.alias_(e, n, copy=False) for n, e in items])
    if query.where is not None:
        sel = sel.where(query.where.copy(), copy=False)
    return _statement(query, sel if isinstance(cell, exp.Literal) else sel.group_by(cell.copy(), copy=False))


def _histogram_sql(query: Query, col: exp.Expression, grid: list[float], cell: exp.Expression) -> str:
    lo, hi, step = grid
    clamped = exp.func("LEAST", exp.func("GREATEST", col.copy(), exp.convert(lo)), exp.convert(hi))
    index = exp.Cast(
        this=exp.func(
            "ROUND",
            exp.Div(
                this=exp.Paren(this=exp.Sub(this=clamped, expression=exp.convert(lo))), expression=exp.convert(step)
            ),
        ),
        to=exp.DataType.build("BIGINT"),
    )
    sel = query.source.copy()
    sel.set(
        "expressions",
        [exp.alias_(cell.copy(), "cell"), exp.alias_(index, "bin"), exp.alias_(exp.Count(this=exp.Star()), "n")],
    )
    cond: exp.Expression = exp.Not(this=exp.Is(this=col.copy(), expression=exp.Null()))
    if query.where is not None:
        cond = exp.And(this=exp.Paren(this=query.where.copy()), expression=cond)
    keys = [index.copy()] if isinstance(cell, exp.Literal) else [cell.copy(), index.copy()]
    return _statement(query, sel.where(cond, copy=False).group_by(*keys, copy=False))


def _ranks_persons(query: Query) -> bool:
    """Whether the dominance rule's local query names each row's person: only where a person's
    rows in several cells add up in a margin (without margins a row is one person in one cell)."""
    return query.person is not None and query.grouping_sets != (tuple(range(len(query.keys))),)


def _dominance_sql(query: Query, contrib: exp.Expression, cell: exp.Expression) -> str:
    """The dominance rule's local query: each person's summed contribution per cell (each row
    alone when the table names no person), for :func:`site_agent.privacy.dominance.site_top`."""
    sel = query.source.copy()
    items: list[exp.Expr] = [exp.alias_(cell.copy(), "cell")]
    if query.person is None:  # each row is a person
        items.append(exp.alias_(total(contrib.copy()), "v"))
    else:
        alias, column = query.person.split(".", 1)
        if _ranks_persons(query):
            items.append(exp.alias_(exp.column(column, table=alias), "person"))
        items.append(exp.alias_(exp.Sum(this=contrib.copy()), "v"))
    sel.set("expressions", items)
    if query.where is not None:
        sel = sel.where(query.where.copy(), copy=False)
    if query.person is not None:
        keys = [] if isinstance(cell, exp.Literal) else [cell.copy()]
        sel = sel.group_by(*keys, exp.column(column, table=alias), copy=False)
    return _statement(query, sel)


def _members_sql(query: Query, items: list[exp.Expr], cell: exp.Expression) -> str:
    """The ledger's membership query: one row per source row, its person, cell and sets, made
    total like every local statement (a row on which a set's condition raises is in no set)."""
    sel = query.source.copy()
    sets = [exp.alias_(total(item.this), item.alias) for item in items[1:]]
    sel.set("expressions", [exp.alias_(cell.copy(), "cell"), items[0], *sets])
    person = items[0].this  # the person column
    cond: exp.Expression = exp.Not(this=exp.Is(this=person.copy(), expression=exp.Null()))
    if query.where is not None:
        cond = exp.And(this=exp.Paren(this=query.where.copy()), expression=cond)
    return _statement(query, sel.where(cond, copy=False))


def whole_set_ledger(query: Query, groups: Sequence[exp.Expr] = ()) -> dict[str, Any] | None:
    """The ledger spec of a model statement: membership SQL for
    :func:`site_agent.query.membership.membership`, or None when the FROM table declares no
    person column (then nothing is compared or remembered, as for an aggregate query over such
    a table). Its query sets are the FROM/WHERE rows (one set), or with ``groups`` (conditions,
    as VALIDATE's BY groups, a fit's complete cases, COX's strata) the rows of the WHERE set
    that meet each, one set per group."""
    if query.person is None:
        return None
    alias, column = query.person.split(".", 1)
    conditions = [g.copy() for g in groups] or [exp.true()]
    items: list[exp.Expr] = [exp.alias_(exp.column(column, table=alias), "person")]
    items += [exp.alias_(c, f"m{i}") for i, c in enumerate(conditions)]
    return {"sql": _members_sql(query, items, exp.Literal.number(0)), "sets": len(conditions)}


def person_rows_sql(query: Query, values: Sequence[exp.Expression] = ()) -> str:
    """A linked cohort's local rows (:mod:`site_agent.linkage.cohort_statement`): one per source
    row meeting the WHERE whose person is known, its ``person`` and each of ``values`` (``v0``,
    ``v1``, ...; NULL on a row where one raises). The FROM table must declare a person column."""
    assert query.person is not None
    alias, column = query.person.split(".", 1)
    items: list[exp.Expr] = [exp.alias_(exp.column(column, table=alias), "person")]
    items += [exp.alias_(v.copy(), f"v{i}") for i, v in enumerate(values)]
    return _members_sql(query, items, exp.Literal.number(0))


def key_domains(query: Query) -> list[tuple[Any, ...]]:
    """Each key's domain as the plan records it (``(other)`` appended where needed)."""
    return [with_other(k.domain, k.expr, k.site) for k in query.keys]


def cell_expression(query: Query) -> exp.Expression:
    """The local SQL expression of a row's cell: its position in the grid of the keys' domains
    (row-major, without the ``SITE`` key, whose slice is placed at execution)."""
    cell: exp.Expression = exp.Literal.number(0)
    stride = 1
    for key, domain in reversed(list(zip(query.keys, key_domains(query), strict=True))):
        if key.site:
            continue  # placed at execution: each site's rows fill only its own SITE slice
        term = _key_index(key.expr, key.domain, len(domain) > len(key.domain))
        term = term if stride == 1 else exp.Mul(this=exp.Paren(this=term), expression=exp.Literal.number(stride))
        cell = term if isinstance(cell, exp.Literal) else exp.Add(this=term, expression=cell)
        stride *= len(domain)
    return cell


def check_kind(query: Query, rules: DisclosureRules) -> None:
    """Refuse a statement kind the combined rules do not allow (rule ``statement_kinds``)."""
    kind = PER_SITE_BREAKDOWN if any(k.site for k in query.keys) else AGGREGATE
    if rules.statement_kinds is not None and kind not in rules.statement_kinds:
        allowed = ", ".join(sorted(rules.statement_kinds)) or "none"
        raise rules.refusal(
            "statement_kinds", f"{kind!r} statements are not allowed (allowed: {allowed})", "check_kind", kind
        )


def plan_keys(query: Query, domains: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The plan's ``keys``: name, SQL, domain and the SITE and ``(other)`` marks."""
    return [
        {
            "name": k.name,
            "sql": _sql(k.expr),
            "domain": list(d),
            **({"site": True} if k.site else {}),
            **({"other": True} if len(d) > len(k.domain) else {}),
        }
        for k, d in zip(query.keys, domains, strict=True)
    ]


def build_plan(query: Query, rules: DisclosureRules) -> Plan:
    """The plan of a validated query under the combined ``rules``."""
    check_kind(query, rules)
    b = _Builder(query, rules)
    for i, agg in enumerate(query.aggregates):
        b.add(i, agg)
    sites = {"op": "sites", "input": "n_rows", "min_sites": rules.min_sites, "out": "few_sites"}
    few = (str(sites["out"]),) if rules.min_sites > 1 else ()
    suppress = b.release.step(rules.threshold, SECONDARY_PASSES, few)  # adds its counts to the local SQL
    supports = [r["count"] for r in suppress["rows"]]
    domains = key_domains(query)
    cell = cell_expression(query)
    local: list[dict[str, Any]] = [
        {"name": "cells", "sql": _local_sql(query, b.items, cell), "columns": ["cell"] + [n for n, _ in b.items]}
    ]
    for h in b.histograms:
        lo, hi, step = h["grid"]
        bins = round((hi - lo) / step) + 1
        local.append(
            {
                "name": h["name"],
                "sql": _histogram_sql(query, h["expr"], h["grid"], cell),
                "columns": ["cell", "bin", "n"],
                "bins": bins,
                "grid": h["grid"],
            }
        )
    for d in b.dominance:
        local.append(
            {
                "name": d["name"],
                "sql": _dominance_sql(query, d["expr"], cell),
                "columns": ["cell", "person", "v"] if _ranks_persons(query) else ["cell", "v"],
                "top": rules.dominance[0] if rules.dominance else 0,
            }
        )
    steps: list[dict[str, Any]] = [check_step(), {"op": "pool", "inputs": b.pool}]
    if "quantile" in b.steps:  # before suppression: a quantile's grid bins take part in it
        steps.append({"op": "quantile", "items": b.steps["quantile"]})
    if "dominance" in b.steps and rules.dominance:  # before suppression: its flags stop cells
        n, pct = rules.dominance
        steps.append({"op": "dominance", "items": b.steps["dominance"], "n": n, "p": pct})
    steps += [*([sites] if few else []), suppress, {"op": "reveal_flags"}]
    for op in ("round", "mean_fixed", "pool_m2", "divide", "sqrt", "extreme", "wilson", "byar"):
        if op in b.steps:
            steps.append({"op": op, "items": b.steps[op]})
    steps.append({"op": "reveal", "items": [r["name"] for r in b.reveals]})
    reveals = [
        check_reveal(),
        {
            "name": "suppressed",
            "value": "suppressed",
            "encoding": "flags",
            "support": -1,
            "shape": f"{len(supports)} x cells",
            "what": "suppression flag per release row and cell (1: a query set, a non-NULL count or the "
            "difference of two query sets holds 1 to k-1 persons, "
            + ("or a sum is dominated by a few persons or holds a dominated cell, " if rules.dominance else "")
            + "or suppressed so that no suppressed value follows from released cells and margins)",
        },
        *b.reveals,
    ]
    ledger: dict[str, Any] = {}  # the query sets' members, for the release ledger (persons only)
    if b.release.person is not None:
        members = b.release.members(b.release.person)
        ledger["ledger"] = {"sql": _members_sql(query, members, cell), "sets": len(b.release.sets)}
    data = {
        "version": PLAN_VERSION,
        "query": query.text,
        "params": {
            "frac_bits": FRAC_BITS,
            "count_bits": COUNT_BITS,
            "min_cell_size": rules.threshold,
            **({"redact_at_or_below": rules.redact_at_or_below} if rules.redact_at_or_below else {}),
            **({"round_counts": rules.round_counts} if rules.round_counts else {}),
            **({"min_sites": rules.min_sites} if rules.min_sites > 1 else {}),
            **({"dominance": list(rules.dominance)} if rules.dominance else {}),
            "z": Z95,
            "secondary_passes": SECONDARY_PASSES,
        },
        "keys": plan_keys(query, domains),
        "grouping_sets": [list(s) for s in query.grouping_sets],
        "supports": supports,
        "local": local,
        **ledger,
        "inputs": [*b.inputs, check_input()],
        "steps": steps,
        "reveals": reveals,
        "outputs": b.outputs,
        **({"post": query.post.to_json()} if query.post.active else {}),
    }
    return Plan(data)
