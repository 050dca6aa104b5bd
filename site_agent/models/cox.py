"""COX proportional hazards on the pooled rows: the partial likelihood's Newton method on shares.

Statement: ``COX time, event ~ terms FROM t [WHERE ...] [TIES EFRON | BRESLOW] [STRATA col]``
(formula terms as in :mod:`.formula`, no intercept; EFRON is the default, as in R's ``coxph``
and lifelines; STRATA gives each value of a column with a public domain its own baseline
hazard: the bins below are then cells (stratum, bin) and risk sets stay within a stratum, each
stratum a query set of at least k persons). The release ledger's query sets are the persons of
the rows the fit uses and, with STRATA, those of each stratum (:func:`~.statement.with_ledger`).

Formulas (Efron 1977, "The efficiency of Cox's likelihood function for censored data", JASA
72:557-565; Therneau and Grambsch 2000, *Modeling Survival Data*, section 3.3). At each
distinct event time t_j with d_j events, risk set R_j = {i: T_i >= t_j}, event set D_j and
w_i = exp(x_i'b), write S0, S1, S2 for the sums over R_j of w, w x, w x x', E0, E1, E2 for the
same sums over D_j, and, for l = 0 .. d_j - 1, c = l / d_j (Efron; Breslow: c = 0 with weight
d_j instead of d_j terms of weight 1):

    D = S0 - c E0,   m1 = (S1 - c E1) / D,   m2 = (S2 - c E2) / D
    log L = sum_j [ sum_{i in D_j} x_i'b - sum_l log D ]
    U     = sum_j [ sum_{i in D_j} x_i   - sum_l m1 ]
    I     = sum_j sum_l ( m2 - m1 m1' )

Method:

1. *Time grid*. The time column must declare a public ``grid = [lo, hi, step]`` in the schema.
   A row's time falls in bin floor((T - lo) / step); rows outside [lo, hi] are dropped (and
   counted). The fit is Cox's on the times rounded down to the grid: exact when the times lie
   on the grid (lung's whole days on a 1-day grid); between grid points, ties are created and
   handled by the chosen method, so a coarser grid trades resolution for fewer bins.
2. *Local step* at each site, in the clear, at public b: per bin, the sums over its rows of
   w, w x, w x x' (upper triangle), the same over its events, the number of events, and
   sum x over its events (all bins). Shared with :data:`FC` fractional bits (the counts as
   integers); the first step also sends the counts for the disclosure rules.
3. *On shares* (pooled over sites): risk-set sums S = reverse cumulative sums of the bins'
   sums (local); for EFRON the bits [d_j >= m], m = 1 .. L + 1 (one batch of comparisons, at
   the first step only), which give c = l / d_j and the mask [l < d_j] as public linear
   combinations; a bin with more than L = :data:`MAX_TIES` tied events refuses the model
   (rule ``cox_ties``, one bit: use TIES BRESLOW or a finer grid). Every D, m1, m2 for every
   bin and every l at once: one batch of products and one batch of quotients with one shared
   normalisation per denominator (:func:`_quotients`); then the weighted sums over bins and l.
4. *Newton* on shares exactly as :mod:`.glm` does (the same :func:`~.glm.newton_step`: the
   information and score as two words, equilibration by powers of two, Newton-Schulz solve),
   the iterate b opened to the committee only (declared reveal point ``iterate``), the sites'
   next terms computed mid-session (:class:`~site_agent.mpc.party.LocalStep`). Converged when
   no coefficient moves by more than :data:`TOL` (standardised units); at most
   :data:`MAX_ITERATIONS` steps. Then up to :data:`~.glm.MAX_POLISH` polishing steps as in
   :mod:`.glm` (the solver reads the score 2^10 more finely; without them the solver's
   resolution leaves the iterate about 1e-6 of a standard error off, which an ill-conditioned
   information, say an interaction with its main effect, turns into 1e-4 of a coefficient
   near zero), until a step moves no coefficient by more than 1e-10 of itself.
5. *Outputs* at the final b: standard errors from the inverse of the information
   (Newton-Schulz, refined once), the log partial likelihood at b and at b = 0 (logs of every
   D, :func:`site_agent.mpc.functions.log`), n and the number of events.
6. *Concordance* (Harrell's C, as lifelines' ``concordance_index_``; within strata, as lifelines
   with ``strata``) at the final b, which the committee knows: one more local step gives each
   site's events and rows per time cell and risk bin (x'b in standardised units on
   :func:`.concordance.risk_bins` equal bins over +-sum |b'_j|, public), shared and pooled, then
   :func:`.concordance.concordance` (one inner product, one division).

Fixed-point ranges. Each numeric covariate is centred and scaled by public numbers:
x' = (x - c) / s with c and s the midpoint and half-width of its public bounds (the schema's
``grid``, or a numeric ``domain``; an indicator likewise from [0, 1]). The partial likelihood
is invariant under a shift of x, and the scaling is undone on the public coefficients
(b = b' / s, se = se' / s). So |x'| <= 1 for data within the bounds, every quotient m1, m2
lies in [-1, 1] (:func:`_quotients` allows 64), and w = exp(x'b') <= exp(sum |b'_j|). Every
site's sum of w over its rows must stay below 2^25 = 3.4e7 (:data:`SITE_SUM_BITS`; else its
local step fails, and the model alike everywhere, with nothing released), so that the pooled
denominators D (risk-set sums of w) of up to 8 sites stay below 2^28, the quotients' range:
n_site exp(sum |b'_j|) < 3.4e7, e.g. 100,000 rows and sum |b'_j| < 5.8; the Efron products
c E (c at :data:`FT` = 20 bits) need |E| < 2^14 in a bin (at most 6 events); the logs need
D < 2^34.
Accuracy: each quotient is within about 2^-28 of the exact one (FC's resolution), so the score
is off by about sqrt(events) 2^-28 and the coefficients by that over the information: 1e-9 to
2e-8 of lung's coefficients, 1e-8 of a standard error (tests: equal to lifelines and R to 1e-5
relative).
Numeric terms need public bounds; ``I(expr)`` terms are not supported (no bounds).

Revealed, and to whom: to the committee, the failure bits, the rule bits (including
``cox_ties``), the dropped-count and censored-count bits and each coefficient iterate; to the
analyst, the final coefficients, standard errors, log partial likelihoods (fitted and null),
n, events (withheld when the censored rows n - events, which subtraction would give, number
1..k-1), the dropped rows (0 or >= k, else withheld) and the concordance C (under the same model
rules and release ledger as the coefficients; nothing else of the histograms is opened). z, p,
intervals, hazard ratios and the likelihood ratio test are computed by the analyst from those.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import sqlglot.expressions as exp

from ..errors import EncodingError, QuerySyntaxError, UnsupportedQuery
from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc import functions as fn
from ..mpc import linalg
from ..mpc.fixed import FixedPoint, decode_int, encode_int
from ..mpc.normalize import exponent_tables, reciprocal_newton
from ..mpc.party import Party, Protocol, local
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..privacy.bands import held_bands
from ..privacy.models import Check, ModelRules, model_checks, released_count
from ..query.catalog import DisclosureRules, Schema
from ..query.failsafe import failure_word, total_sql
from ..query.numeric import FN, Float, divide_float, sqrt_float
from ..query.parse import DIALECT
from ..query.plan import Z95, Plan
from . import concordance, distributions
from .formula import Level, _condition, design, parse_formula
from .glm import (
    COND,
    FB,
    FG,
    FH,
    FS,
    HL,
    INVERSE_RANGE_BITS,
    MAX_POLISH,
    POLISH_RANGE_BITS,
    POLISH_ZOOM,
    RANGE_BITS,
    _counts_sql,
    _settled,
    _symmetric,
    equilibrate,
    newton_step,
    refine_inverse,
)
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
    site_shares,
    site_sum,
    validate_source,
    with_ledger,
)

FC = 28  # bin sums, quotients, score and information (fractional bits)
FT = 20  # the Efron fractions l / d (fractional bits)
SCALE_BITS = 56  # quotients: denominators below 2^(56 - FC), quotients below 2^6
SITE_SUM_BITS = 25  # a site's sum of exp(x'b) below 2^25, so that up to 8 sites' stay below 2^28
MAX_TIES = 6  # EFRON: at most this many tied events in one bin
MAX_ITERATIONS = 30
TOL = 1e-7  # converged when no standardised coefficient moves by more than this
ETA = "__eta__"
_CLAUSE = re.compile(r"\s+(?:TIES\s+(EFRON|BRESLOW)|STRATA\s+([A-Za-z_][A-Za-z0-9_]*))\s*;?\s*$", re.IGNORECASE)


# -- compiling --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sizes:
    bins: int  # cells: strata x grid bins
    grid_bins: int
    k: int
    levels: int

    @property
    def comps(self) -> int:  # w, w x (k), w x x' (upper triangle)
        return 1 + self.k + self.k * (self.k + 1) // 2

    @property
    def counts(self) -> int:  # n_where, n, persons, per level, events
        return 4 + self.levels

    @property
    def step(self) -> int:  # failure word, bin sums of rows and events, events per bin, sum x, sum x'b
        return 1 + 2 * self.comps * self.bins + self.bins + self.k + 1


def _sizes(plan: Plan) -> _Sizes:
    m = plan.data["model"]
    return _Sizes(int(m["bins"]), int(m["grid_bins"]), len(m["names"]), len(m["levels"]))


def public_bounds(column: Any, name: str) -> tuple[float, float]:
    """Public bounds of a numeric covariate: its grid, else its numeric domain."""
    if column is not None and column.grid is not None:
        return float(column.grid[0]), float(column.grid[1])
    domain = () if column is None else (column.domain or ())
    values = [v for v in domain if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(values) < 2:
        raise UnsupportedQuery(f"COX: the numeric term {name} needs public bounds (a grid or a domain) in the schema")
    return float(min(values)), float(max(values))


def interval_product(parts: list[tuple[float, float]]) -> tuple[float, float]:
    """The bounds of a product of factors, each within its (lo, hi)."""
    lo, hi = parts[0]
    for a, b in parts[1:]:
        corners = [lo * a, lo * b, hi * a, hi * b]
        lo, hi = min(corners), max(corners)
    return lo, hi


def _column_bounds(formula: Any, columns: dict[str, Any]) -> list[tuple[float, float]]:
    """(lo, hi) of every design column but the intercept, in :func:`design`'s order: a numeric
    factor its bounds, an indicator [0, 1], an interaction the product of its factors'."""
    out: list[tuple[float, float]] = []
    for term in formula.terms:
        parts: list[list[tuple[float, float]]] = []
        for f in term:
            if f.column.startswith("I("):
                raise UnsupportedQuery("COX: I(expr) terms have no public bounds; use a column")
            if f.categorical:
                domain = [v for v in (columns[f.column].domain or ()) if v is not None]
                parts.append([(0.0, 1.0)] * max(len(domain) - 1, 0))
            else:
                parts.append([public_bounds(columns[f.column], f.column)])
        out += [interval_product(list(combo)) for combo in itertools.product(*parts)]
    return out


def compile_cox(statement: Statement, schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None) -> Plan:
    """The plan of a COX statement (see the module docstring)."""
    if rules.statement_kinds is not None and "model" not in rules.statement_kinds:
        allowed = ", ".join(sorted(rules.statement_kinds)) or "none"
        raise rules.refusal(
            "statement_kinds", f"'model' statements are not allowed (allowed: {allowed})", "check_kind", "model"
        )
    tail, clauses = statement.tail, {}
    while (found := _CLAUSE.search(tail)) is not None:
        name, value = ("ties", found.group(1).lower()) if found.group(1) else ("strata", found.group(2).lower())
        if name in clauses:
            raise QuerySyntaxError(f"COX takes one {name.upper()} clause")
        clauses[name], tail = value, tail[: found.start()]
    if re.search(r"\b(TIES|STRATA)\b", tail, re.IGNORECASE):
        raise QuerySyntaxError("COX ends with [TIES EFRON | BRESLOW] [STRATA column]")
    ties, strata = clauses.get("ties", "efron"), clauses.get("strata")
    sides = statement.body.split("~", 1)
    outcome = [s.strip() for s in sides[0].split(",")]
    if len(sides) != 2 or len(outcome) != 2 or not all(outcome):
        raise QuerySyntaxError("COX needs 'time, event ~ term + term ...'")
    time_name, event = outcome
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", time_name):
        raise QuerySyntaxError("COX: the time must be a column (with a grid in the schema)")
    formula = parse_formula(f"{time_name} ~ {sides[1]}")
    names = formula.columns
    if strata is not None and strata in names:
        raise UnsupportedQuery(f"COX: {strata} is both a term and the STRATA column")
    sources = [time_name, event, *formula.sources, *([strata] if strata else [])]
    query, resolved = validate_source(tail, sources, schema, rules, sites)
    tables = [t.name.lower() for t in query.source.find_all(exp.Table)]

    def column(c: str) -> Any:
        return next((schema.tables[t].columns[c] for t in tables if c in schema.tables[t].columns), None)

    time_col = column(time_name.lower())
    if time_col is None or time_col.grid is None:
        raise UnsupportedQuery(f"COX: the time column {time_name} needs a grid [lo, hi, step] in the schema")
    lo, hi, step = (float(v) for v in time_col.grid)
    bins = math.floor((hi - lo) / step + 1e-9) + 1
    columns = {c: column(c) for c in names}
    bounds = _column_bounds(formula, columns)
    d = design(
        formula,
        dict(zip(names, resolved[2 : 2 + len(names)], strict=True)),
        resolved[0],
        {c: getattr(columns[c], "domain", None) for c in names},
    )
    stratum: exp.Expr | None = None
    n_strata = 1
    levels: list[Level] = []
    if strata is not None:  # one stratum per value of the column's domain, each a query set
        values = [v for v in (getattr(column(strata), "domain", None) or ()) if v is not None]
        if not values:
            raise UnsupportedQuery(f"COX: STRATA {strata} needs a public domain in the schema")
        levels = [Level(strata, v, _condition(resolved[-1], v)) for v in values]
        stratum = exp.Case(ifs=[exp.If(this=lv.condition, true=exp.Literal.number(i)) for i, lv in enumerate(levels)])
        in_domain = exp.In(this=resolved[-1].copy(), expressions=[lv.condition.expression.copy() for lv in levels])
        d = replace(d, complete=exp.and_(d.complete, in_domain), levels=(*d.levels, *levels))
        n_strata = len(levels)
    k = len(d.columns) - 1
    if k > 20:
        raise UnsupportedQuery(f"the model has {k} terms; COX takes at most 20")
    double = exp.DataType.build("DOUBLE")
    t_expr = exp.Cast(this=resolved[0].copy(), to=double)
    ev = exp.Cast(this=resolved[1].copy(), to=double)
    complete = exp.and_(
        d.complete,
        exp.Not(this=exp.Is(this=exp.Paren(this=resolved[1].copy()), expression=exp.Null())),
        exp.In(this=ev.copy(), expressions=[exp.convert(0.0), exp.convert(1.0)]),
        exp.Between(this=t_expr.copy(), low=exp.convert(lo), high=exp.convert(hi)),
    )
    centre = [(a + b) / 2 for a, b in bounds]
    scale = [(b - a) / 2 if b > a else 1.0 for a, b in bounds]
    model_rules = ModelRules(rules.threshold, rules.model_min_df, rules.model_events_per_term)
    inner = _rows_sql(query, d, t_expr, ev, complete, (lo, step, bins), stratum, centre, scale)
    risk_bins = concordance.risk_bins(bins * n_strata)
    data = {
        "version": 1,
        "query": statement.text,
        "model": {
            "kind": "COX",
            "ties": ties,
            "names": d.names[1:],
            "levels": [[lv.column, lv.value] for lv in d.levels],
            "time": time_name.lower(),
            "event": event,
            "grid": [lo, hi, step],
            "strata": strata,
            "grid_bins": bins,
            "bins": bins * n_strata,
            "centre": centre,
            "scale": scale,
            "risk_bins": risk_bins,
        },
        "params": {
            "min_cell_size": model_rules.k,
            "min_residual_df": model_rules.min_df,
            "min_events_per_term": model_rules.events_per_term,
            "max_ties": MAX_TIES if ties == "efron" else None,
            "bits": {"sums": FC, "coef": FB, "system": FS},
            "cond": COND,
            "max_iterations": MAX_ITERATIONS,
            "tolerance": TOL,
        },
        "keys": [],
        "grouping_sets": [[]],
        "local": [
            {"name": "counts", "sql": _counts_sql(query, d, ev, complete, "cox"), "when": "first step"},
            {
                "name": "bins",
                "sql": _bins_sql(inner, k),
                "when": f"every step, {ETA} = the linear predictor at public beta",
            },
            {
                "name": "concordance",
                "sql": _concordance_sql(inner, risk_bins),
                "when": f"after the fit, {ETA} at the final beta on a grid of {risk_bins} risk bins over "
                "[-sum |beta|, sum |beta|] (standardised units)",
            },
        ],
        "reveals": _reveals(),
    }
    # query sets: the persons of the rows the fit uses, and with STRATA those of each stratum
    return with_ledger(Plan(data), query, [complete, *(exp.and_(complete, lv.condition) for lv in levels)])


def _rows_sql(
    query: Any,
    d: Any,
    t_expr: exp.Expr,
    ev: exp.Expr,
    complete: exp.Expr,
    grid: tuple[float, float, int],
    stratum: exp.Expr | None,
    centre: list[float],
    scale: list[float],
) -> str:
    """The model's complete rows: the standardised design columns z0.., the event ``ev`` and the
    time cell ``bin`` (stratum * bins + time bin)."""
    sel = query.source.copy()
    cols = []
    for j, c in enumerate(d.columns[1:]):
        shifted = exp.Sub(this=exp.Paren(this=c.sql.copy()), expression=exp.convert(centre[j]))
        cols.append(exp.alias_(exp.Div(this=exp.Paren(this=shifted), expression=exp.convert(scale[j])), f"z{j}"))
    cols.append(exp.alias_(ev.copy(), "ev"))
    lo, step, bins = grid
    bin_expr: exp.Expr = exp.maybe_parse(f"CAST(FLOOR((t - {lo!r}) / {step!r} + 1e-9) AS BIGINT)", dialect=DIALECT)
    bin_expr = bin_expr.transform(lambda n: t_expr.copy() if isinstance(n, exp.Column) and n.name == "t" else n)
    if stratum is not None:
        bin_expr = exp.Add(
            this=exp.Mul(this=exp.Paren(this=stratum.copy()), expression=exp.convert(bins)), expression=bin_expr
        )
    cols.append(exp.alias_(bin_expr, "bin"))
    sel.set("expressions", cols)
    cond = complete if query.where is None else exp.and_(exp.Paren(this=query.where.copy()), complete)
    return total_sql(sel.where(cond)).sql(DIALECT)


def _bins_sql(inner: str, k: int) -> str:
    """Per time bin (of each stratum: cell stratum * bins + bin): sums of w, w z, w z z' over rows
    and over events, events, sum z over events; z the standardised design columns,
    w = exp(``__eta__``)."""
    prods = ["1.0"] + [f"z{i}" for i in range(k)] + [f"z{i} * z{j}" for i in range(k) for j in range(i, k)]
    sums = [f"SUM(w * {x}) AS a{c}" for c, x in enumerate(prods)]
    sums += [f"SUM(ev * w * {x}) AS e{c}" for c, x in enumerate(prods)]
    sums += ["SUM(ev) AS d"] + [f"SUM(ev * z{i}) AS sx{i}" for i in range(k)] + [f"SUM(ev * {ETA}) AS seta"]
    return (
        f"SELECT bin, {', '.join(sums)} FROM (SELECT *, EXP({ETA}) AS w FROM ({inner}) AS _rows) AS _w "
        "GROUP BY bin ORDER BY bin"
    )


def _concordance_sql(inner: str, risk_bins: int) -> str:
    """Per time cell and risk bin (``__eta__`` on the public risk grid): events and rows."""
    rbin = concordance.risk_bin_sql(ETA, risk_bins)
    return (
        f"SELECT bin AS cell, {rbin} AS rbin, SUM(ev) AS events, COUNT(*) AS n FROM ({inner}) AS _rows "
        "GROUP BY cell, rbin"
    )


def _reveals() -> list[dict[str, Any]]:
    committee = [
        ("local_failed", "sum of the sites' secret failure words (0: every local step ran), after each local step"),
        ("rules", "one bit per model rule (min_cell_size, model_residual_df, model_events_per_term, cox_ties)"),
        ("dropped_small", "whether the count of dropped rows lies in 1..k-1 (then it is withheld)"),
        ("censored_small", "whether n - events (the censored rows) lies in 1..k-1 (then events is withheld)"),
        ("iterate", "the coefficient iterate beta_t (standardised units) after each Newton step (40 fractional bits)"),
    ]
    analyst = [
        ("coef", "final coefficients (the last iterate)"),
        ("se", "standard errors sqrt((I^-1)_jj) at the final coefficients"),
        ("n", "pooled number of complete cases"),
        ("events", "pooled number of events among them (withheld when n - events lies in 1..k-1)"),
        ("dropped", "pooled rows of the WHERE set dropped (missing values, time off the grid; 0 or >= k)"),
        ("llf", "log partial likelihood at the final coefficients"),
        ("llf_null", "log partial likelihood at beta = 0"),
        (
            "concordance",
            "Harrell's C at the final coefficients (lifelines' concordance_index_; risks on a public grid, "
            "ties within a bin count 1/2)",
        ),
    ]
    return [{"name": n, "to": "committee", "what": w} for n, w in committee] + [
        {"name": n, "to": "analyst", "what": w} for n, w in analyst
    ]


# -- the local step ---------------------------------------------------------------------------
def _eta(beta: list[float]) -> str:
    return "(" + " + ".join(f"z{j} * CAST('{float(b)!r}' AS DOUBLE)" for j, b in enumerate(beta)) + ")"


def local_cox(plan: Plan, con: Any, holds_data: bool, params: dict[str, Any] | None) -> U64:
    """A site's vector: on the first step (``params`` None) the counts and the bin sums at
    beta = 0, later the bin sums at ``params["beta"]``. Never raises: any failure gives zeros
    and a secret failure word in the first word of the bin sums."""
    sz = _sizes(plan)
    if params is not None and params.get("concordance"):
        return _local_concordance(plan, con, [float(b) for b in params["beta"]])
    first = params is None
    beta = [0.0] * sz.k if params is None else [float(b) for b in params["beta"]]
    try:
        if len(beta) != sz.k:
            raise ValueError("wrong number of coefficients")
        frame = con.execute(plan.data["local"][1]["sql"].replace(ETA, _eta(beta))).fetchnumpy()
        idx = np.asarray(frame["bin"], dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= sz.bins):
            raise ValueError("a row outside the grid")

        def per_bin(name: str) -> np.ndarray:
            out = np.zeros(sz.bins)
            out[idx] = np.ma.filled(np.ma.asarray(frame[name], dtype=np.float64), 0.0)
            return out

        fc = FixedPoint(FC)
        rows = np.concatenate([per_bin(f"a{c}") for c in range(sz.comps)])
        events = np.concatenate([per_bin(f"e{c}") for c in range(sz.comps)])
        sx = np.array([per_bin(f"sx{i}").sum() for i in range(sz.k)] + [per_bin("seta").sum()])
        if not np.all(np.isfinite(rows)) or rows[: sz.bins].sum() >= 2.0**SITE_SUM_BITS:
            raise EncodingError("the sum of exp(x'b) is not finite or beyond the quotients' range")
        parts = [encode_int([0]), fc.encode(rows), fc.encode(events), encode_int(np.rint(per_bin("d"))), fc.encode(sx)]
        if first:
            c = con.execute(plan.data["local"][0]["sql"]).fetchnumpy()
            value = {name: float(np.ma.filled(np.ma.asarray(col, dtype=np.float64), 0.0)[0]) for name, col in c.items()}
            ints = [value["n_where"], value["n"], value["persons"]]
            ints += [value[f"level{i}"] for i in range(sz.levels)] + [value["sum_y"]]
            parts.insert(0, encode_int(np.rint(ints).astype(np.int64)))
        out = np.concatenate(parts).astype(np.uint64)
        if out.size != sz.step + (sz.counts if first else 0):
            raise ValueError("local vector of the wrong size")
        return out
    except Exception:  # the engine or the data: every member fails alike, the site's log says nothing more
        failed = np.zeros(sz.step + (sz.counts if first else 0), dtype=np.uint64)
        failed[sz.counts if first else 0] = failure_word()
        return failed


def _risk_shape(plan: Plan) -> tuple[int, int, int]:
    """The concordance histograms' shape: one group, every time cell, the plan's risk bins."""
    m = plan.data["model"]
    return 1, int(m["bins"]), int(m["risk_bins"])


def _risk_grid(plan: Plan, beta: list[float]) -> tuple[float, float]:
    """The public risk grid at the final standardised ``beta``: eta = z'beta lies within
    +-sum |beta| for rows within the columns' public bounds (|z| <= 1)."""
    bound = float(np.sum(np.abs(beta)))
    return concordance.risk_grid(-bound, bound, int(plan.data["model"]["risk_bins"]))


def _local_concordance(plan: Plan, con: Any, beta: list[float]) -> U64:
    """A site's concordance histograms at the final ``beta`` (:mod:`.concordance`); never raises."""
    shape = _risk_shape(plan)
    try:
        if len(beta) != _sizes(plan).k:
            raise ValueError("wrong number of coefficients")
        sql = concordance.fill_grid(plan.data["local"][2]["sql"].replace(ETA, _eta(beta)), *_risk_grid(plan, beta))
        return concordance.histograms(con.execute(sql).fetchnumpy(), shape)
    except Exception:  # the engine or the data: every member fails alike, the site's log says nothing more
        return concordance.failed_input(shape)


# -- the committee's program ------------------------------------------------------------------
def _const(p: Party, values: Any, shape: tuple[int, ...]) -> AShare:
    arr = np.broadcast_to(np.asarray(values, dtype=np.int64).view(np.uint64), shape).copy()
    return ar.constant(p, arr, AShare)


def _wide(x: AShare, shape: tuple[int, ...]) -> AShare:
    """x repeated along new leading axes to ``shape`` (numpy broadcasting of its trailing axes)."""
    v = x.v.reshape(2, *([1] * (len(shape) - len(x.shape))), *x.shape)
    return AShare(np.broadcast_to(v, (2, *shape)).copy())


@dataclass
class _Ties:
    """Per (l, bin): the public-linear Efron fraction c = l / d at FT bits and the weight (Efron:
    [l < d]; Breslow, l = 0 only: d), from the pooled events per bin (fixed over the fit)."""

    c: AShare  # (L, bins), FT fractional bits
    weight: AShare  # (L, bins)
    too_many: AShare  # (1,): bins with more than MAX_TIES events (Efron)


def _ties(p: Party, plan: Plan, d: AShare) -> Protocol[_Ties]:
    bins = d.shape[0]
    if plan.data["model"]["ties"] == "breslow":
        return _Ties(_const(p, 0, (1, bins)), d.reshape(1, bins), _const(p, 0, (1,)))
    top = int(plan.data["params"]["max_ties"])
    limits = np.repeat(np.arange(1, top + 2), bins)
    below = yield from bo.lt(p, _wide(d, (top + 1, bins)).ravel(), _const(p, limits, limits.shape))
    ge = (_const(p, 1, below.shape) - below).reshape(top + 1, bins)  # ge[m - 1] = [d >= m]
    eq = [ge[m - 1] - ge[m] for m in range(1, top + 1)]  # [d == m]
    c = []
    for ell in range(top):
        acc = _const(p, 0, (bins,))
        for m in range(ell + 1, top + 1):
            acc = acc + eq[m - 1].mul_public(np.int64(round(ell / m * 2**FT)).view(np.uint64))
        c.append(acc[None])
    return _Ties(AShare.concat(c), ge[:top], ge[top].sum().reshape(1))


@dataclass
class _Terms:
    """One step's terms on shares: score and information at FC bits, and what the log partial
    likelihood needs (the denominators D and the sum of x'b over the events)."""

    failed: AShare
    score: AShare  # (k,)
    info: AShare  # (k(k+1)/2,) upper triangle
    den: AShare  # (L, bins)
    seta: AShare  # (1,): sum of x'b over events


def _split(sz: _Sizes, pooled: AShare) -> tuple[AShare, AShare, AShare, AShare, AShare, AShare]:
    """(failure words, rows' bin sums (comps, bins), events' bin sums, events per bin, sum of
    x over events, sum of x'b over events) from a pooled step vector."""
    n_sums = sz.comps * sz.bins
    rows = pooled[1 : 1 + n_sums].reshape(sz.comps, sz.bins)
    events = pooled[1 + n_sums : 1 + 2 * n_sums].reshape(sz.comps, sz.bins)
    at = 1 + 2 * n_sums
    d, sx, seta = pooled[at : at + sz.bins], pooled[at + sz.bins : at + sz.bins + sz.k], pooled[at + sz.bins + sz.k :]
    return pooled[:1], rows, events, d, sx, seta


def _terms(p: Party, sz: _Sizes, pooled: AShare, ties: _Ties) -> Protocol[_Terms]:
    """Score and information from one pooled step vector (module docstring, step 3): one batch
    of products, one batch of divisions, two batches of products, for every bin and l at once."""
    failed, rows, events, _, sx, seta = _split(sz, pooled)
    cells = rows.v.reshape(2, sz.comps, -1, sz.grid_bins)  # (strata, bins): risk sets within a stratum
    risk = AShare(np.cumsum(cells[..., ::-1], axis=3, dtype=np.uint64)[..., ::-1].reshape(rows.v.shape))
    ell, k, bins = ties.c.shape[0], sz.k, sz.bins
    shape = (ell, sz.comps, bins)
    c = AShare(np.broadcast_to(ties.c.v[:, :, None, :], (2, *shape)).copy())
    ce = yield from ar.mul_fixed(p, c, _wide(events, shape), FT)
    num = _wide(risk, shape) - ce  # (L, comps, bins): D, S1 - c E1, S2 - c E2
    den = num[:, 0, :]
    q = yield from _quotients(p, num[:, 1:, :], den)
    m1, m2 = q[:, :k, :], q[:, k:, :]
    iu = np.triu_indices(k)
    outer = yield from ar.mul_fixed(p, m1[:, iu[0], :], m1[:, iu[1], :], FC)
    both = AShare.concat([m1, m2 - outer], axis=1)  # (L, comps - 1, bins)
    weight = AShare(np.broadcast_to(ties.weight.v[:, :, None, :], (2, ell, sz.comps - 1, bins)).copy())
    weighted = (yield from ar.mul(p, weight, both)).sum(axis=2).sum(axis=0)
    return _Terms(failed, sx - weighted[:k], weighted[k:], den, seta)


def _quotients(p: Party, num: AShare, den: AShare) -> Protocol[AShare]:
    """num / den at FC bits for num (L, c, bins) and den (L, bins), both at FC bits, den >= 0
    below 2^(SCALE_BITS - FC) (0 gives 0), |num / den| < 2^(62 - SCALE_BITS).

    The denominators alone are normalised (Catrina and Saxena 2010, as
    :func:`site_agent.query.numeric.divide_fixed`): with e the bit length of den's ring value,
    the table 2^(SCALE_BITS - e) scales den and its c numerators alike to FN bits, giving
    mant = den 2^(FN - e) in [1/2, 1) and h = (num / den) mant; then h / mant by Newton-Raphson
    (:func:`site_agent.mpc.normalize.reciprocal_newton`). One exponent lookup per denominator
    instead of one division per quotient: a c-fold saving of the boolean work. Relative error
    about 2^-29 per quotient."""
    ell, c, bins = num.shape
    (scale, nonzero), _, _ = yield from exponent_tables(
        p, den, [lambda e: (1 << (SCALE_BITS - e)) if e <= SCALE_BITS else 0, lambda e: 1], signed=False
    )
    wide = (ell, c, bins)
    scales = AShare.concat([scale.ravel(), _wide(scale.reshape(ell, 1, bins), wide).ravel()])
    both = yield from ar.mul_fixed(p, AShare.concat([den.ravel(), num.ravel()]), scales, SCALE_BITS - FN)
    n = ell * bins
    mant = _wide(both[:n].reshape(ell, 1, bins), wide).ravel()
    ones = _wide(nonzero.reshape(ell, 1, bins), wide).ravel()
    q = yield from reciprocal_newton(p, mant, FN, h=both[n:], scale=ones)
    return (yield from ar.trunc(p, q, FN - FC)).reshape(*wide)


def _log_likelihood(p: Party, terms: _Terms, ties: _Ties) -> Protocol[AShare]:
    """sum over events of x'b minus the weighted sum of log D, at FC bits (one batch of logs)."""
    logs = yield from fn.log(p, terms.den, FixedPoint(FC))
    weighted = yield from ar.mul(p, ties.weight, logs)
    return terms.seta - weighted.sum().reshape(1)


def _two_words(p: Party, x: AShare, bits: int) -> Protocol[AShare]:
    """x at FC bits as glm's two words: x at ``bits`` bits and the remainder at ``bits`` + HL."""
    high = yield from ar.trunc(p, x, FC - bits)
    low = (x - high.lshift(FC - bits)).lshift(bits + HL - FC)
    return AShare.concat([high[None], low[None]])


def _system(p: Party, k: int, terms: _Terms) -> Protocol[tuple[AShare, AShare]]:
    """The information as (2, k, k) and the score as (2, k) in :mod:`.glm`'s two-word formats."""
    tri = k * (k + 1) // 2
    words = yield from _two_words(p, AShare.concat([terms.info, terms.score]), FH)
    g = AShare.concat([(words[i, tri:].lshift(FG - FH))[None] for i in range(2)])
    h = AShare.concat([_symmetric(words[i, :tri], k)[None] for i in range(2)])
    return h, g


def _rule_set(plan: Plan) -> ModelRules:
    prm = plan.data["params"]
    return ModelRules(int(prm["min_cell_size"]), int(prm["min_residual_df"]), int(prm["min_events_per_term"]))


def _rules(p: Party, plan: Plan, counts: AShare, ties: _Ties) -> Protocol[tuple[str | None, AShare, bool]]:
    """The model rules on the pooled counts (:mod:`site_agent.privacy.models`) and the ties bound:
    the first failing rule (or None), the dropped rows and whether they are withheld."""
    k, levels = len(plan.data["model"]["names"]), len(plan.data["model"]["levels"])
    rules = _rule_set(plan)
    n_where, n, persons = counts[:1], counts[1:2], counts[2:3]
    per_level, events = counts[3 : 3 + levels], counts[3 + levels : 4 + levels]
    checks = [
        Check("min_cell_size", AShare.concat([persons, per_level, events]), rules.k),
        Check("model_residual_df", ar.add_public(p, n, np.asarray(-k, dtype=np.int64).view(np.uint64)), rules.min_df),
        Check("model_events_per_term", events, rules.events_per_term * k),
        Check("cox_ties", -ties.too_many, 0),
    ]
    failing = yield from model_checks(p, checks)
    refused = next((c.rule for c, bad in zip(checks, failing, strict=True) if bad), None)
    if refused is not None:
        return refused, n, True
    dropped, withheld = yield from released_count(p, n_where - n, rules.k)
    return None, dropped, withheld


def _step(p: Party, sz: _Sizes, site: SiteStep, beta: np.ndarray, ties: _Ties) -> Protocol[_Terms]:
    """The sites' bin sums at the public ``beta`` (ring values at FB bits), pooled, and the terms."""
    coef = (beta.astype(np.float64) / 2.0**FB).tolist()
    mine = yield from local(p, lambda: site({"beta": coef}))
    shares = yield from site_shares(p, mine, sz.step)
    return (yield from _terms(p, sz, pool_sites(shares), ties))


def cox_program(p: Party, plan: Plan, site: SiteStep) -> Protocol[Outcome]:
    """The committee's protocol for one Cox model (module docstring)."""
    sz = _sizes(plan)
    mine = yield from local(p, lambda: site(None))
    pooled = pool_sites((yield from site_shares(p, mine, sz.counts + sz.step)))
    counts, first = pooled[: sz.counts], pooled[sz.counts :]
    if int((yield from ar.open_all(p, first[:1]))[0]) != 0:
        return empty_outcome(local_failed=True)
    ties = yield from _ties(p, plan, _split(sz, first)[3])
    refused, dropped, withheld = yield from _rules(p, plan, counts, ties)
    if refused is not None:
        message = TIES_MESSAGE if refused == "cox_ties" else _rule_set(plan).message(refused)
        return empty_outcome(refused=refused, message=message)
    n, events = counts[1:2], counts[3 + sz.levels : 4 + sz.levels]
    review = yield from held_bands(p, plan.data, ["persons", "events"], AShare.concat([counts[2:3], events]))
    _, censored_small = yield from released_count(p, n - events, _rule_set(plan).k)  # n - events is derivable
    terms = yield from _terms(p, sz, first, ties)
    llf_null = yield from _log_likelihood(p, terms, ties)
    beta = np.zeros(sz.k, dtype=np.int64)
    converged, iterations = False, 0
    polished, most = 0, int(plan.data["params"]["max_iterations"])
    while polished < MAX_POLISH and (converged or iterations < most):
        h, g = yield from _system(p, sz.k, terms)
        if converged:  # a polishing step: the solver reads the right-hand side 2^POLISH_ZOOM more finely
            nxt = yield from newton_step(p, h, g, beta, POLISH_RANGE_BITS, POLISH_ZOOM)
        else:
            nxt = yield from newton_step(p, h, g, beta, RANGE_BITS)
        new = (yield from ar.open_all(p, nxt)).view(np.int64).copy()
        settled = converged and _settled(new, beta)
        polished += int(converged)
        converged = converged or bool(np.max(np.abs(new - beta)) <= TOL * 2.0**FB)
        beta, iterations = new, iterations + 1
        terms = yield from _step(p, sz, site, beta, ties)
        if int((yield from ar.open_all(p, terms.failed))[0]) != 0:
            return empty_outcome(local_failed=True)
        if settled:
            break
    llf = yield from _log_likelihood(p, terms, ties)
    se, stats = yield from _outputs(p, sz.k, terms, AShare.concat([llf, llf_null]))
    c_index = yield from _concordance(p, plan, site, beta)
    if c_index is None:
        return empty_outcome(local_failed=True)
    outputs: list[tuple[str, AShare]] = [(f"se.{part}", getattr(se, part)) for part in FLOAT_PARTS]
    outputs += [(f"llf.{part}", getattr(stats, part)) for part in FLOAT_PARTS]
    outputs += [(f"concordance.{part}", getattr(c_index, part)) for part in FLOAT_PARTS]
    outputs.append(("n", n))
    if not censored_small:
        outputs.append(("events", events))
    if not withheld:
        outputs.append(("dropped", dropped))
    meta = {
        "plan": plan.data,
        "digest": plan.digest(),
        "coef": beta.tolist(),
        "converged": converged,
        "iterations": iterations,
        "layout": [[name, int(x.size)] for name, x in outputs],
        **review,
    }
    return AShare.concat([x.ravel() for _, x in outputs]), meta


def _concordance(p: Party, plan: Plan, site: SiteStep, beta: np.ndarray) -> Protocol[Float | None]:
    """Harrell's C at the final (public) ``beta``: the sites' histograms over the time cells and
    the risk grid, shared and pooled, then :func:`.concordance.concordance` (None when a site's
    local step failed)."""
    coef = (beta.astype(np.float64) / 2.0**FB).tolist()
    shape = _risk_shape(plan)
    size = concordance.input_size(shape)
    mine = yield from local(p, lambda: site({"beta": coef, "concordance": True}))
    pooled = yield from site_sum(p, mine, size)
    if int((yield from ar.open_all(p, pooled[:1]))[0]) != 0:
        return None
    strata = int(plan.data["model"]["bins"]) // int(plan.data["model"]["grid_bins"])
    return (yield from concordance.concordance(p, pooled[1:], shape, strata))


def _outputs(p: Party, k: int, terms: _Terms, llfs: AShare) -> Protocol[tuple[Float, Float]]:
    """Standard errors (from the equilibrated information's refined inverse, as :mod:`.glm`
    computes them) and the two log partial likelihoods, as canonical floats."""
    h, g = yield from _system(p, k, terms)
    hh, _, _, half = yield from equilibrate(p, h, g)
    inv = yield from linalg.inverse(p, hh, FixedPoint(FS), COND, INVERSE_RANGE_BITS)
    inv = yield from refine_inverse(p, hh, inv, FS)
    nums = AShare.concat([inv[np.arange(k), np.arange(k)], llfs])
    offsets = np.concatenate([np.full(k, -FS), np.full(2, -FC)])
    q = yield from divide_float(p, nums, _const(p, 1, (k + 2,)), offsets)
    root = yield from sqrt_float(p, q[:k])
    se = Float(root.sign, root.mant, root.exp + _const(p, FH // 2, (k,)) - half)  # times D_j = 2^(FH/2 - e_j/2)
    return se, q[k:]


TIES_MESSAGE = f"more than {MAX_TIES} events share one time of the grid; use TIES BRESLOW or a finer grid"


# -- the analyst's side -----------------------------------------------------------------------
def assemble_cox(meta: dict[str, Any], shares: list[AShare]) -> pd.DataFrame:
    """The summary DataFrame, shaped like lifelines' ``CoxPHFitter.summary``."""
    plan, values = opened_outputs(meta, shares)
    model = plan.data["model"]

    def floats(name: str) -> np.ndarray:
        return opened_floats(values, name)

    scale = np.asarray(model["scale"], dtype=np.float64)
    coef = np.asarray(meta["coef"], dtype=np.float64) / 2.0**FB / scale
    se = floats("se") / scale
    z = coef / se
    pvalues = np.array([math.erfc(abs(v) / math.sqrt(2.0)) for v in z])
    lower, upper = coef - Z95 * se, coef + Z95 * se
    frame = pd.DataFrame(
        {
            "coef": coef,
            "exp(coef)": np.exp(coef),
            "se(coef)": se,
            "coef lower 95%": lower,
            "coef upper 95%": upper,
            "exp(coef) lower 95%": np.exp(lower),
            "exp(coef) upper 95%": np.exp(upper),
            "z": z,
            "p": pvalues,
        },
        index=pd.Index(model["names"], name="covariate"),
    )
    llf, llf_null = (float(v) for v in floats("llf"))
    lr = 2.0 * (llf - llf_null)
    frame.attrs.update(
        {
            "model": "COX",
            "ties": model["ties"],
            "n": int(decode_int(values["n"])[0]),
            "events": int(decode_int(values["events"])[0]) if "events" in values else None,
            "n_dropped": int(decode_int(values["dropped"])[0]) if "dropped" in values else None,
            "llf": llf,
            "llf_null": llf_null,
            "lr_test": lr,
            "lr_df": coef.size,
            "lr_p": distributions.chi2_sf(lr, coef.size),
            "concordance": float(floats("concordance")[0]),
            "risk_bins": int(model["risk_bins"]),
            "converged": bool(meta["converged"]),
            "iterations": int(meta["iterations"]),
            "plan_digest": meta["digest"],
            "reveals": [{"name": r["name"], "to": r["to"], "what": r["what"]} for r in plan.data["reveals"]],
        }
    )
    return frame


def explain_cox(plan: Plan) -> str:
    """The plan in words: local SQL, the Newton loop on shares, every reveal point."""
    d = plan.data
    m, prm = d["model"], d["params"]
    lo, hi, step = m["grid"]
    lines = [f"Plan {plan.digest()[:16]} for:", *("    " + t for t in d["query"].strip().splitlines()), ""]
    lines.append(
        f"COX proportional hazards ({m['ties'].upper()} ties) by Newton's method on shares; "
        f"terms: {', '.join(m['names'])}; time grid [{lo:g}, {hi:g}] step {step:g} ({m['grid_bins']} bins)"
        + (f"; strata: {m['strata']} ({m['bins'] // m['grid_bins']})" if m["strata"] else "")
        + "."
    )
    lines.append(
        f"Model rules (checked on shares before anything is opened): at least {prm['min_cell_size']} persons in the "
        f"model's rows, in its events and in every level of a categorical term; n - terms >= "
        f"{prm['min_residual_df']}; events per term >= {prm['min_events_per_term']}"
        + (f"; at most {prm['max_ties']} events at one grid time" if prm["max_ties"] else "")
        + "."
    )
    lines += ["", "1. Local step at every site, in the clear, on its own data:"]
    for q in d["local"]:
        lines.append(f"   [{q['name']}]: ({q['when']}) {q['sql']}")
    lines += [
        "",
        "2. Secret-shared to the committee:",
        "   the counts, at the first step only",
        f"   per time bin: sums of w, w x, w x x' over the rows and over the events ({prm['bits']['sums']} "
        "fractional bits), events per bin; sums of x and of x'b over the events",
        f"   after the fit: events and rows per time bin and risk bin ({m['risk_bins']} bins of x'b over "
        "+-sum |beta| at the final beta), for the concordance",
        "",
        "3. MPC steps:",
        "   pool the sites' vectors; open the sum of their failure words",
        "   risk-set sums by reverse cumulative sums over the bins (local)",
        "   model rules: comparisons on shares, one bit per rule opened",
        "   each step: every bin's divisions at once (score and information terms), Newton-Schulz solve "
        f"(condition bound {prm['cond']:g}), open beta + step to the committee, local step at the new beta",
        f"   convergence: no standardised coefficient moves by more than {prm['tolerance']:g}, at most "
        f"{prm['max_iterations']} steps",
        "   outputs: the information's inverse (Newton-Schulz, refined once), standard errors and the log "
        "partial likelihoods (logs of every bin's denominators) as floats",
        "   concordance: suffix sums over time and prefix sums over risk (local), one inner product of the "
        "histograms (concordant pairs, ties 1/2; comparable pairs), one division",
        "",
        "4. Reveal points:",
    ]
    for r in d["reveals"]:
        lines.append(f"   [{r['to']}] {r['name']}: {r['what']}")
    return "\n".join(lines)


MODELS["COX"] = ModelKind(compile_cox, local_cox, cox_program, assemble_cox, explain_cox)
