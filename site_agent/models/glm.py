"""LINEAR, LOGISTIC and POISSON regression on the pooled rows: Newton's method on shares.

Statement: ``LINEAR|LOGISTIC|POISSON y ~ terms FROM t [WHERE ...] [OFFSET log(col)]`` (OFFSET for
POISSON only; formula syntax in :mod:`.formula`).

Method (the same for the three families; statsmodels' GLM with the canonical link):

1. *First local step*, at each site in the clear: counts of its rows in the WHERE set, its
   complete cases, distinct persons (overall and per level of each categorical term), the
   outcome's sum, mean and sum of squared deviations, and the first Newton terms at beta = 0.
2. The sites' vectors are secret-shared to the committee (``site_shares``) and pooled. A failed
   local step anywhere fails the model alike everywhere (:mod:`site_agent.query.failsafe`).
3. *Disclosure checks* on shares (:mod:`site_agent.privacy.models`): one bit per rule is opened
   to the committee; a failing rule ends the model with a refusal naming it.
4. *Newton iterations*. At public coefficients beta, each site computes, over its complete
   cases, the Hessian X'WX, the score X'(y - mu) and its deviance; the pooled Hessian is
   equilibrated on shares by powers of two (D = diag(2^-floor(e_j/2)), e_j the bit length of
   H_jj; exact rescaling, no division), D H D y = D g is solved by the Newton-Schulz iteration
   (:mod:`site_agent.mpc.linalg`), and beta + D y is opened *to the committee only* (the
   declared reveal point "coefficient iterate"; DESIGN.md: iterative models may reveal
   coefficient iterates to the sites). The sites compute the next terms at the new beta in a
   local step in the middle of the session (:class:`site_agent.mpc.party.LocalStep`, run in a
   worker thread by the network adapter). Convergence: |D_t - D_(t-1)| < 2^-27 D_t (about
   7.5e-9 of the deviance D) decided on shares and opened as one bit per iteration; at most
   :data:`MAX_ITERATIONS` steps.
5. *Polishing*. The solver resolves its right-hand side relative to its range (about 2^-29 of
   the trace for steps below 2^16 standard errors), which leaves an iterate about 1e-9 of a
   standard error from the optimum. Once the deviance has converged, up to :data:`MAX_POLISH`
   steps follow with a narrow range and D g read 2^:data:`POLISH_ZOOM` more finely, until a
   step moves no public coefficient by more than 1e-10 of itself; a polishing step that moved
   the deviance by more than the tolerance is undone. Each step's score is computed by the
   sites in float64 and shared with about 44 fractional bits (:func:`_split_words`), so the
   solver's error only slows the contraction: it does not limit the final precision. LINEAR
   takes two steps and two polishing steps.
6. *Outputs* at the final beta, on shares: (H^-1)_jj from the Newton-Schulz inverse of the
   equilibrated Hessian refined once with an exact residual (:func:`refine_inverse`), the
   scale (RSS / (n - p) for LINEAR, 1 otherwise), standard errors as canonical floats
   (relative error about 1e-8), the deviance, the log-likelihood (POISSON), R^2 as RSS / TSS
   with TSS pooled from the sites' means and M2 (LINEAR), n and the dropped rows (released
   under the ordinary rule: 0 or at least k).

Revealed, and to whom: to the committee, the failure bits, the rule bits, the dropped-count
bit, each coefficient iterate and each convergence bit; to the analyst, the final
coefficients, standard errors, n, dropped rows, deviance, log-likelihood (POISSON) and R^2
(LINEAR). Nothing per site. t/z values, p-values and confidence intervals are computed by the
analyst from those.

Fixed-point formats (ring values): the Hessian and outcome sums at 20 fractional bits and the
Hessian's remainder at 40, scores at 24 with their remainder at 44, the deviance and the
log-likelihood constant at 24, coefficients at 40 (|beta| < 2^22), the equilibrated system,
its solution and its inverse at 30.
Requirements: every Hessian diagonal entry at least 1 (a term with less information than one
observation is not estimable), the equilibrated Hessian's condition number below
:data:`COND`, each Newton step below 2^16 standard errors, and every site's Hessian entry
below 2^42 and score below 2^38 (else its local step fails, and so the model, alike
everywhere). NIST's Longley data break the condition bound (docs/models.md, "Accuracy").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlglot.expressions as exp

from ..errors import EncodingError, QuerySyntaxError, UnsupportedQuery
from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc import linalg
from ..mpc.fixed import FixedPoint, decode_int, encode_int
from ..mpc.normalize import exponent_tables
from ..mpc.party import Party, Protocol, local
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..privacy.bands import held_bands
from ..privacy.models import Check, ModelRules, model_checks, released_count
from ..query.catalog import DisclosureRules, Schema
from ..query.failsafe import failure_word, total_sql
from ..query.numeric import FN, Float, divide_fixed, divide_float, sqrt_float
from ..query.parse import DIALECT
from ..query.plan import COUNT_BITS, Z95, Plan
from . import distributions
from .formula import Design, design, parse_formula, split_top
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
    require_model_kind,
    site_shares,
    validate_source,
    with_ledger,
)

FAMILIES = {"LINEAR": "gaussian", "LOGISTIC": "binomial", "POISSON": "poisson"}
FH = 20  # Hessian entries, outcome sums (fractional bits)
HL = 20  # the Hessian's and the score's remainders: HL more fractional bits
FG = 24  # scores, deviance, log-likelihood constant
FB = 40  # coefficient iterates (|beta| < 2^22)
FS = 30  # the equilibrated system, its solution and inverse
EQ = 30  # D_j = 2^(EQ - floor(e_j / 2)) 2^(FH / 2) / 2^EQ
RANGE_BITS = 16  # a Newton step below 2^16 in equilibrated units (standard errors)
POLISH_RANGE_BITS = 10  # the polishing steps, once the deviance has converged
POLISH_ZOOM = 10  # ... of 2^-10 standard errors at most, resolved 2^10 more finely
MAX_POLISH = 2
INVERSE_RANGE_BITS = 14  # entries of (D H D)^-1, below 2 COND
COND = 1e4
MAX_ITERATIONS = 30
TOL_BITS = 27  # |D_t - D_(t-1)| < 2^-27 D_t
ETA = "__eta__"
_OFFSET = re.compile(r"\s+OFFSET\s+(?:log|ln)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*;?\s*$", re.IGNORECASE)


# -- compiling --------------------------------------------------------------------------------
def _family_sql(family: str) -> tuple[str, str, str]:
    """(mu, weight, deviance contribution) as SQL over the columns ``eta`` and ``y``."""
    if family == "gaussian":
        return "eta", "1.0", "(y - eta) * (y - eta)"
    if family == "binomial":
        return (
            "1.0 / (1.0 + EXP(-eta))",
            "mu * (1.0 - mu)",
            "2.0 * (GREATEST(eta, 0.0) + LN(1.0 + EXP(-ABS(eta))) - y * eta)",
        )
    return "EXP(eta)", "mu", "2.0 * (CASE WHEN y > 0 THEN y * LN(y / mu) ELSE 0.0 END - (y - mu))"


def compile_glm(statement: Statement, schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None) -> Plan:
    """The plan of a LINEAR, LOGISTIC or POISSON statement (see the module docstring)."""
    query, d, response, off_col, offset = glm_design(statement, schema, rules, sites)
    response_text = split_top(statement.body, "~")[0].strip()
    plan = plan_glm(statement, query, d, response, response_text, off_col, offset, rules)
    used = complete_cases(FAMILIES[statement.keyword], d, response, off_col)
    return with_ledger(plan, query, [used])  # the query set: the persons of the rows the fit uses


def glm_design(
    statement: Statement, schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None
) -> tuple[Any, Design, exp.Expression, exp.Expression | None, str | None]:
    """A GLM statement parsed and validated: (the validated source, the design, the resolved
    response, the resolved offset column and its name, or None)."""
    require_model_kind(rules)
    family = FAMILIES[statement.keyword]
    tail, offset = statement.tail, None
    found = _OFFSET.search(tail)
    if found:
        if family != "poisson":
            raise UnsupportedQuery("OFFSET log(column) is for POISSON models")
        offset, tail = found.group(1).lower(), tail[: found.start()]
    elif re.search(r"\bOFFSET\b", tail, re.IGNORECASE):
        raise QuerySyntaxError("OFFSET takes log(column) at the end of the statement")
    formula = parse_formula(statement.body)
    names = formula.columns
    query, resolved = validate_source(
        tail, [formula.response, *formula.sources, *([offset] if offset else [])], schema, rules, sites
    )
    tables = [t.name.lower() for t in query.source.find_all(exp.Table)]
    domains = {}
    for c in names:
        found_col = next((schema.tables[t].columns[c] for t in tables if c in schema.tables[t].columns), None)
        domains[c] = found_col.domain if found_col is not None else None
    response = resolved[0]
    d = design(formula, dict(zip(names, resolved[1 : 1 + len(names)], strict=True)), response, domains)
    return query, d, response, resolved[-1] if offset else None, offset


def complete_cases(family: str, d: Design, response: exp.Expr, off_col: exp.Expr | None) -> exp.Expr:
    """The rows a GLM fits (its complete cases): the design's (no NULL in a named column, each
    ``C()`` value in its domain), with a 0/1 response (binomial), a response >= 0 (poisson) and
    an offset > 0. Also the model's release-ledger query set (:func:`compile_glm`)."""
    y = exp.Cast(this=response.copy(), to=exp.DataType.build("DOUBLE"))
    complete: exp.Expr = d.complete
    if family == "binomial":
        complete = exp.and_(complete, exp.In(this=y.copy(), expressions=[exp.convert(0.0), exp.convert(1.0)]))
    elif family == "poisson":
        complete = exp.and_(complete, exp.GTE(this=y.copy(), expression=exp.convert(0.0)))
    if off_col is not None:
        complete = exp.and_(complete, exp.GT(this=off_col.copy(), expression=exp.convert(0.0)))
    return complete


def plan_glm(
    statement: Statement,
    query: Any,
    d: Design,
    response: exp.Expr,
    response_text: str,
    off_col: exp.Expr | None,
    offset: str | None,
    rules: DisclosureRules,
) -> Plan:
    """The plan of a GLM over the validated source ``query`` and the ``design`` ``d`` (its
    response and offset column resolved): also the calibration fits of :mod:`.validate`."""
    family = FAMILIES[statement.keyword]
    y = exp.Cast(this=response.copy(), to=exp.DataType.build("DOUBLE"))
    complete = complete_cases(family, d, response, off_col)
    off_expr = None
    if off_col is not None:
        off_expr = exp.Ln(this=exp.Cast(this=off_col.copy(), to=exp.DataType.build("DOUBLE")))
    k = len(d.columns)
    if k > 60:
        raise UnsupportedQuery(f"the model has {k} parameters; at most 60")
    counts_sql = _counts_sql(query, d, y, complete, family)
    step_sql = _step_sql(query, d, y, complete, off_expr, family)
    model_rules = ModelRules(rules.threshold, rules.model_min_df, rules.model_events_per_term)
    data = {
        "version": 1,
        "query": statement.text,
        "model": {
            "kind": statement.keyword,
            "family": family,
            "names": d.names,
            "levels": [[lv.column, lv.value] for lv in d.levels],
            "response": response_text,
            "offset": offset,
        },
        "params": {
            "min_cell_size": model_rules.k,
            "min_residual_df": model_rules.min_df,
            "min_events_per_term": model_rules.events_per_term,
            "bits": {"hessian": FH, "score": FG, "coef": FB, "system": FS},
            "cond": COND,
            "max_iterations": MAX_ITERATIONS,
            "tolerance_bits": TOL_BITS,
        },
        "keys": [],
        "grouping_sets": [[]],
        "local": [
            {"name": "counts", "sql": counts_sql, "when": "first step"},
            {"name": "newton", "sql": step_sql, "when": f"every step, {ETA} = the linear predictor at public beta"},
        ],
        "reveals": _reveals(family),
    }
    return Plan(data)


def _counts_sql(query: Any, d: Any, y: exp.Expr, complete: exp.Expr, family: str) -> str:
    person = None
    if query.person is not None:
        alias, column = query.person.split(".", 1)
        person = exp.column(column, table=alias)

    def when(cond: exp.Expr, value: exp.Expr) -> exp.Expr:
        return exp.Case(ifs=[exp.If(this=cond.copy(), true=value.copy())])

    def persons(cond: exp.Expr) -> exp.Expr:
        if person is None:
            return exp.Count(this=when(cond, exp.Literal.number(1)))
        return exp.Count(this=exp.Distinct(expressions=[when(cond, person)]))

    items: list[exp.Expr] = [
        exp.alias_(exp.Count(this=exp.Star()), "n_where"),
        exp.alias_(exp.Count(this=when(complete, exp.Literal.number(1))), "n"),
        exp.alias_(persons(complete), "persons"),
    ]
    for i, lv in enumerate(d.levels):
        items.append(exp.alias_(persons(exp.and_(complete.copy(), lv.condition.copy())), f"level{i}"))
    yc = when(complete, y)
    items += [
        exp.alias_(exp.Sum(this=yc.copy()), "sum_y"),
        exp.alias_(exp.Avg(this=yc.copy()), "mean_y"),
        exp.alias_(exp.Mul(this=exp.VariancePop(this=yc.copy()), expression=exp.Count(this=yc.copy())), "m2_y"),
    ]
    if family == "poisson":  # sum of y log y - y - log y!, for the log-likelihood
        term: exp.Expr = exp.maybe_parse(
            "CASE WHEN y > 0 THEN y * LN(y) ELSE 0.0 END - y - LGAMMA(y + 1.0)", dialect=DIALECT
        )
        term = term.transform(lambda n: y.copy() if isinstance(n, exp.Column) and n.name == "y" else n)
        items.append(exp.alias_(exp.Sum(this=when(complete, term)), "lconst"))
    sel = query.source.copy()
    sel.set("expressions", items)
    if query.where is not None:
        sel = sel.where(query.where.copy())
    return total_sql(sel).sql(DIALECT)


def _step_sql(query: Any, d: Any, y: exp.Expr, complete: exp.Expr, offset: exp.Expr | None, family: str) -> str:
    """The Newton terms at public beta: the inner SELECT reads the complete cases' design
    columns z0..z(k-1), outcome y and offset; ``__eta__`` is replaced by the linear predictor."""
    sel = query.source.copy()
    cols = [exp.alias_(c.sql.copy(), f"z{j}") for j, c in enumerate(d.columns)]
    cols.append(exp.alias_(y.copy(), "y"))
    cols.append(exp.alias_(offset.copy() if offset is not None else exp.convert(0.0), "off"))
    sel.set("expressions", cols)
    cond = complete if query.where is None else exp.and_(exp.Paren(this=query.where.copy()), complete)
    inner = total_sql(sel.where(cond)).sql(DIALECT)
    k = len(d.columns)
    mu, w, dev = _family_sql(family)
    sums = ["COUNT(*) AS n"]
    sums += [f"SUM(wz{i} * z{j}) AS h_{i}_{j}" for i in range(k) for j in range(i, k)]
    sums += [f"SUM(z{i} * r) AS g{i}" for i in range(k)]
    sums.append("SUM(d) AS dev")
    wz = ", ".join(f"w * z{i} AS wz{i}" for i in range(k))
    return (
        f"SELECT {', '.join(sums)} FROM (SELECT *, {wz}, y - mu AS r, {dev} AS d FROM "
        f"(SELECT *, {w} AS w FROM (SELECT *, {mu} AS mu FROM "
        f"(SELECT *, {ETA} AS eta FROM ({inner}) AS _rows) AS _eta) AS _mu) AS _w) AS _terms"
    )


def eta_rows_sql(step_sql: str, beta: list[float]) -> str:
    """The complete cases of a Newton-step SQL (:func:`_step_sql`) as a subquery: their design
    columns z0..z(k-1), outcome y, offset and linear predictor ``eta`` at public ``beta``."""
    start = step_sql.index(f"(SELECT *, {ETA} AS eta FROM ")
    end = step_sql.index(" AS _eta)", start) + len(" AS _eta")
    return step_sql[start:end].replace(ETA, eta_sql(beta))


def _reveals(family: str) -> list[dict[str, Any]]:
    committee = [
        ("local_failed", "sum of the sites' secret failure words (0: every local step ran), after each local step"),
        ("rules", "one bit per model rule (min_cell_size, model_residual_df, model_events_per_term)"),
        ("dropped_small", "whether the count of dropped rows lies in 1..k-1 (then it is withheld)"),
        ("iterate", "the coefficient iterate beta_t after each Newton step (40 fractional bits)"),
        ("converged", "whether |D_t - D_(t-1)| < 2^-27 D_t for the deviance D, after each step"),
    ]
    analyst = [
        ("coef", "final coefficients (the last iterate)"),
        ("se", "standard errors sqrt(scale (H^-1)_jj) at the final coefficients"),
        ("n", "pooled number of complete cases"),
        ("dropped", "pooled rows of the WHERE set dropped for missing values (0 or >= k, else withheld)"),
        ("deviance", "pooled deviance at the final coefficients"),
    ]
    if family == "gaussian":
        analyst.append(("rss_tss", "RSS / TSS (R^2 = 1 - RSS / TSS)"))
    if family == "poisson":
        analyst.append(("llf", "log-likelihood at the final coefficients"))
    return [{"name": n, "to": "committee", "what": w} for n, w in committee] + [
        {"name": n, "to": "analyst", "what": w} for n, w in analyst
    ]


# -- the local step ---------------------------------------------------------------------------
def vector_sizes(plan: Plan) -> tuple[int, int]:
    """(words of the first step's counts, words of every Newton step)."""
    m = plan.data["model"]
    k = len(m["names"])
    counts = 3 + len(m["levels"]) + 3 + (1 if m["family"] == "poisson" else 0)
    return counts, 1 + k * (k + 1) + 2 * k + 1


def eta_sql(beta: list[float]) -> str:
    terms = [f"z{j} * CAST('{float(b)!r}' AS DOUBLE)" for j, b in enumerate(beta)]
    return "(" + " + ".join(terms) + " + off)"


def _fetch(con: Any, sql: str) -> dict[str, float]:
    out = {}
    for name, col in con.execute(sql).fetchnumpy().items():
        value = np.ma.getdata(col)[0] if len(col) else None
        masked = bool(np.ma.getmaskarray(col)[0]) if len(col) else True
        out[name] = 0.0 if masked or value is None or not np.isfinite(float(value)) else float(value)
        if not masked and value is not None and not np.isfinite(float(value)):
            raise EncodingError("a Newton term is not finite")
    return out


def _split_words(values: np.ndarray, bits: int) -> list[U64]:
    """``values`` at ``bits`` fractional bits and their remainder at ``bits`` + HL bits: two
    words each, so a pooled Hessian or score keeps about 40 fractional bits in a 64-bit ring."""
    high = FixedPoint(bits).encode(values)
    scaled = values * 2.0**bits  # exact: a power of two
    return [high, encode_int(np.rint((scaled - np.rint(scaled)) * 2.0**HL).astype(np.int64))]


def local_glm(plan: Plan, con: Any, holds_data: bool, params: dict[str, Any] | None) -> U64:
    """A site's vector: on the first step (``params`` None) counts and the Newton terms at
    beta = 0, later the Newton terms at ``params["beta"]``. Never raises: any failure gives
    zeros and a secret failure word in the first word of the Newton terms."""
    m = plan.data["model"]
    k = len(m["names"])
    n_counts, n_step = vector_sizes(plan)
    first = params is None
    beta = [0.0] * k if params is None else [float(b) for b in params["beta"]]
    try:
        if len(beta) != k:
            raise ValueError("wrong number of coefficients")
        step = _fetch(con, plan.data["local"][1]["sql"].replace(ETA, eta_sql(beta)))
        tri = np.array([step[f"h_{i}_{j}"] for i in range(k) for j in range(i, k)])
        score = np.array([step[f"g{i}"] for i in range(k)])
        parts = [
            encode_int([0]),
            *_split_words(tri, FH),
            *_split_words(score, FG),
            FixedPoint(FG).encode([step["dev"]]),
        ]
        if first:
            c = _fetch(con, plan.data["local"][0]["sql"])
            ints = [c["n_where"], c["n"], c["persons"], *(c[f"level{i}"] for i in range(len(m["levels"])))]
            sums = [c["sum_y"], c["mean_y"], c["m2_y"]]
            counts = [encode_int(np.asarray(ints, dtype=np.int64)), FixedPoint(FH).encode(sums)]
            if m["family"] == "poisson":
                counts.append(FixedPoint(FG).encode([c["lconst"]]))
            parts = counts + parts
        out = np.concatenate(parts).astype(np.uint64)
        if out.size != n_step + (n_counts if first else 0):
            raise ValueError("local vector of the wrong size")
        return out
    except Exception:  # the engine or the data: every member fails alike, the site's log says nothing more
        failed = np.zeros(n_step + (n_counts if first else 0), dtype=np.uint64)
        failed[n_counts if first else 0] = failure_word()
        return failed


# -- the committee's program ------------------------------------------------------------------
def _const(p: Party, values: Any, shape: tuple[int, ...]) -> AShare:
    arr = np.broadcast_to(np.asarray(values, dtype=np.int64).view(np.uint64), shape).copy()
    return ar.constant(p, arr, AShare)


def _symmetric(tri: AShare, k: int) -> AShare:
    """The k x k matrix from its upper triangle (row-major, i <= j)."""
    iu = np.triu_indices(k)
    index = np.zeros((k, k), dtype=np.int64)
    index[iu] = np.arange(iu[0].size)
    index.T[iu] = np.arange(iu[0].size)
    return AShare(tri.v[:, index])


def equilibrate(
    p: Party, h: AShare, g: AShare, bits: int = FS, g_bits: int = FS
) -> Protocol[tuple[AShare, AShare, AShare, AShare]]:
    """(D H D at ``bits`` and D g at ``g_bits`` fractional bits, t, floor(e/2)) with
    D_j = t_j 2^(FH/2) / 2^EQ,
    for H given as (2, k, k) and g as (2, k): each value at FH (FG) bits and its remainder at
    HL more bits (:func:`_split_words`),
    t_j = 2^(EQ - floor(e_j/2)) and e_j the bit length of H_jj's ring value: D H D has its
    diagonal in [1/2, 2) (Jacobi scaling by powers of two, so no division on shares).

    H_ij t_i t_j < 2^(2 EQ + 1), so the products are exact before one truncation each."""
    k = h.shape[1]
    diag = h[0][np.arange(k), np.arange(k)]
    (t, half), _, _ = yield from exponent_tables(
        p, diag, [lambda e: (1 << (EQ - e // 2)) if e // 2 <= EQ else 0, lambda e: e // 2], signed=False
    )
    tt = yield from ar.mul(
        p,
        AShare(np.broadcast_to(t.v[:, :, None], (2, k, k)).copy()),
        AShare(np.broadcast_to(t.v[:, None, :], (2, k, k)).copy()),
    )
    prod = yield from ar.mul(p, AShare.concat([h.ravel(), g.ravel()]), AShare.concat([tt.ravel(), tt.ravel(), t, t]))
    first = EQ + FG - FH // 2 - g_bits
    scaled = yield from ar.trunc(p, prod, first)  # g: to ``g_bits``; H: part of the way
    hs = yield from ar.trunc(p, scaled[: 2 * k * k], 2 * EQ - bits - first)
    lows = yield from ar.trunc(p, AShare.concat([hs[k * k :], scaled[2 * k * k + k :]]), HL)
    hh = (hs[: k * k] + lows[: k * k]).reshape(k, k)
    return hh, scaled[2 * k * k : 2 * k * k + k] + lows[k * k :], t, half


def newton_step(p: Party, h: AShare, g: AShare, beta: np.ndarray, range_bits: int, zoom: int = 0) -> Protocol[AShare]:
    """beta + H^-1 g at FB bits (secret), for the public ``beta`` (ring values at FB bits).

    The step y in equilibrated units, times 2^``zoom``, must lie below 2^``range_bits``. The
    solver resolves its right-hand side to about 2^(range_bits - 40) of the trace, so a
    polishing step (small y) is solved with a narrow range on D g taken at FS + zoom bits and
    read as an FS-bit value (a public scaling by 2^zoom): its result is y at FS + zoom bits."""
    hh, gg, t, _ = yield from equilibrate(p, h, g, FS, FS + zoom)
    y = yield from linalg.solve(p, hh, gg, FixedPoint(FS), COND, range_bits)
    fy = min(FS + zoom, 60 - range_bits + zoom - (EQ - FH // 2))  # y t < 2^60, t <= 2^(EQ - FH/2)
    if fy < FS + zoom:
        y = yield from ar.trunc(p, y, FS + zoom - fy)
    d = yield from ar.mul(p, y, t)  # D y at EQ + fy - FH/2 bits
    d = yield from ar.trunc(p, d, EQ + fy - FH // 2 - FB)
    return ar.add_public(p, d, beta.view(np.uint64))


def refine_inverse(p: Party, a: AShare, x: AShare, bits: int) -> Protocol[AShare]:
    """One Newton-Schulz step X + X (I - A X) with the residual computed exactly.

    A and X carry ``bits`` fractional bits; A X is taken without truncation (2 ``bits`` bits,
    below 2^62 as A X is close to I), so R = I - A X is exact; R truncated to ``bits`` bits
    times X is the correction. The residual squares (R_new = R^2) down to the format's
    resolution, which the iteration of :func:`site_agent.mpc.linalg.inverse` (internal
    precision about 2^-22, times the condition number) does not reach."""
    k = a.shape[0]
    ax = yield from ar.matmul(p, a, x)
    eye = _const(p, np.eye(k, dtype=np.int64) << (2 * bits), (k, k))
    r = yield from ar.trunc(p, eye - ax, bits)
    xr = yield from ar.matmul_fixed(p, x, r, bits)
    return x + xr


def mul_float(p: Party, a: Float, b: Float) -> Protocol[Float]:
    """a b for positive canonical floats: mantissa product, renormalised into [1, 2)."""
    prod = yield from ar.mul_fixed(p, a.mant, b.mant, FN)
    big = yield from bo.lt(p, _const(p, (2 << FN) - 1, prod.shape), prod)
    half = yield from ar.trunc(p, prod, 1)
    drop = yield from ar.mul(p, big, prod - half)
    return Float(a.sign, prod - drop, a.exp + b.exp + big)


def split_terms(pooled: AShare, k: int) -> tuple[AShare, AShare, AShare, AShare]:
    """(failure word sum, H as (2, k, k), g as (2, k), deviance) from a pooled Newton-step vector."""
    tri = k * (k + 1) // 2
    h = AShare.concat([_symmetric(pooled[1 + i * tri : 1 + (i + 1) * tri], k)[None] for i in range(2)])
    g = pooled[1 + 2 * tri : 1 + 2 * tri + 2 * k].reshape(2, k)
    return pooled[:1], h, g, pooled[1 + 2 * tri + 2 * k :]


def _pool(shares: list[AShare]) -> tuple[AShare, AShare]:
    """(per site (2, sites, n) stacked, pooled sum over sites)."""
    stacked = AShare(np.stack([s.v for s in shares], axis=1))
    return stacked, AShare(stacked.v.sum(axis=1, dtype=np.uint64))


def _minus(p: Party, x: AShare, c: int) -> AShare:
    return ar.add_public(p, x, np.asarray(-c, dtype=np.int64).view(np.uint64))


def rule_set(plan: Plan) -> ModelRules:
    prm = plan.data["params"]
    return ModelRules(int(prm["min_cell_size"]), int(prm["min_residual_df"]), int(prm["min_events_per_term"]))


@dataclass
class _Fit:
    """One member's view of a fit: the public iterate and its shares of the pooled terms there."""

    beta: np.ndarray  # ring values at FB bits, public to the committee
    failed: AShare
    h: AShare
    g: AShare
    dev: AShare
    converged: bool = False
    iterations: int = 0


def check_rules(p: Party, plan: Plan, counts: AShare) -> Protocol[tuple[str | None, AShare, bool]]:
    """The model rules on the pooled counts (:mod:`site_agent.privacy.models`): the first failing
    rule (or None), and the dropped rows with whether they are withheld (1..k-1)."""
    m = plan.data["model"]
    k, levels = len(m["names"]), len(m["levels"])
    rules = rule_set(plan)
    n_where, n, persons, per_level = counts[:1], counts[1:2], counts[2:3], counts[3 : 3 + levels]
    sum_y = counts[3 + levels : 4 + levels]
    checks = [
        Check("min_cell_size", AShare.concat([persons, per_level]), rules.k),
        Check("model_residual_df", _minus(p, n, k), rules.min_df),
    ]
    if m["family"] != "gaussian":  # events at FH bits; for a binary outcome the rarer side
        events = [sum_y] if m["family"] == "poisson" else [sum_y, n.lshift(FH) - sum_y]
        checks.append(Check("model_events_per_term", AShare.concat(events), rules.events_per_term * (k - 1) << FH))
    failing = yield from model_checks(p, checks)
    refused = next((c.rule for c, bad in zip(checks, failing, strict=True) if bad), None)
    if refused is not None:
        return refused, n, True
    dropped, withheld = yield from released_count(p, n_where - n, rules.k)
    return None, dropped, withheld


def review_bands(p: Party, plan: Plan, counts: AShare) -> Protocol[dict[str, Any]]:
    """For a model held for output review, its sizes as bands for the DPOs (``{"bands": ...}``;
    ``{}`` otherwise): the persons of its complete cases and, for a binary outcome, its events."""
    m = plan.data["model"]
    persons, sum_y = counts[2:3], counts[3 + len(m["levels"]) : 4 + len(m["levels"])]
    if m["family"] != "binomial":
        return (yield from held_bands(p, plan.data, ["persons"], persons))
    both = AShare.concat([persons.lshift(FH), sum_y])  # the events at FH bits
    return (yield from held_bands(p, plan.data, ["persons", "events"], both, FH))


def _settled(beta: np.ndarray, before: np.ndarray) -> bool:
    """Whether a polishing step moved every public coefficient by at most 1e-10 of itself (or
    16 units of the last place): no further step would change what is released."""
    new, old = beta.astype(np.float64), before.astype(np.float64)
    return bool(np.all(np.abs(new - old) <= 1e-10 * np.abs(new) + 16))


def _newton(p: Party, plan: Plan, site: SiteStep, fit: _Fit) -> Protocol[bool]:
    """Newton steps and polishing steps (module docstring, steps 4 and 5) from ``fit``, updated
    in place; False when a site's local step failed."""
    k, n_step = len(plan.data["model"]["names"]), vector_sizes(plan)[1]
    max_iterations = int(plan.data["params"]["max_iterations"])
    previous: AShare | None = None
    kept: tuple[np.ndarray, AShare, AShare, AShare] | None = None  # the state before a polishing step
    polished = 0
    for it in range(max_iterations + MAX_POLISH + 1):
        if previous is not None:
            diff = previous - fit.dev
            tol = ar.add_public(p, (yield from ar.trunc(p, fit.dev, TOL_BITS)), np.asarray(1, dtype=np.uint64))
            within = yield from bo.lt(p, AShare.concat([diff, -diff]), AShare.concat([tol, tol]))
            both = yield from ar.mul(p, within[:1], within[1:])
            bits = yield from ar.open_all(p, AShare.concat([fit.failed, both]))
            if int(bits[0]) != 0:
                return False
            if kept is not None:  # after a polishing step: undo one that moved the deviance
                if int(bits[1]) != 1:
                    fit.beta, fit.h, fit.g, fit.dev = kept
                    break
                if polished == MAX_POLISH or _settled(fit.beta, kept[0]):
                    break
            fit.converged = fit.converged or int(bits[1]) == 1
        if it >= max_iterations and not fit.converged:
            break
        if fit.converged:
            kept = (fit.beta, fit.h, fit.g, fit.dev)
            polished += 1
            nxt = yield from newton_step(p, fit.h, fit.g, fit.beta, POLISH_RANGE_BITS, POLISH_ZOOM)
        else:
            nxt = yield from newton_step(p, fit.h, fit.g, fit.beta, RANGE_BITS)
        fit.beta = (yield from ar.open_all(p, nxt)).view(np.int64).copy()
        fit.iterations += 1
        coef = (fit.beta.astype(np.float64) / 2.0**FB).tolist()
        mine = yield from local(p, lambda c=coef: site({"beta": c}))  # type: ignore[misc]
        _, step = _pool((yield from site_shares(p, mine, n_step)))
        previous = fit.dev
        fit.failed, fit.h, fit.g, fit.dev = split_terms(step, k)
    return True


def _outputs(
    p: Party, plan: Plan, fit: _Fit, counts: AShare, stacked: AShare
) -> Protocol[tuple[Float, dict[str, Float]]]:
    """Standard errors and the fit statistics at the final coefficients, as canonical floats
    (module docstring, step 6): one batch of divisions, one square root."""
    m = plan.data["model"]
    k, levels, family = len(m["names"]), len(m["levels"]), m["family"]
    n, sum_y = counts[1:2], counts[3 + levels : 4 + levels]
    hh, _, _, half = yield from equilibrate(p, fit.h, fit.g)
    inv = yield from linalg.inverse(p, hh, FixedPoint(FS), COND, INVERSE_RANGE_BITS)
    inv = yield from refine_inverse(p, hh, inv, FS)
    one = _const(p, 1, (1,))
    scale_den = _minus(p, n, k) if family == "gaussian" else one
    nums = [inv[np.arange(k), np.arange(k)], fit.dev]
    dens = [AShare(np.broadcast_to(scale_den.v, (2, k)).copy()), one]
    offsets = [np.full(k, -FS), np.array([-FG])]
    if family == "gaussian":  # RSS / TSS, and RSS as a float for the scale
        tss = yield from _pooled_tss(p, AShare(stacked.v[:, :, 3 + levels : 6 + levels]), n, sum_y, stacked)
        rss = yield from ar.trunc(p, fit.dev, FG - FH)
        nums += [rss, fit.dev]
        dens += [tss, one]
        offsets += [np.array([0]), np.array([-FG])]
    if family == "poisson":  # llf = sum (y log y - y - log y!) - D / 2
        half_dev = yield from ar.trunc(p, fit.dev, 1)
        nums.append(counts[6 + levels : 7 + levels] - half_dev)
        dens.append(one)
        offsets.append(np.array([-FG]))
    q = yield from divide_float(p, AShare.concat(nums), AShare.concat(dens), np.concatenate(offsets))
    v: Float = q[:k]
    if family == "gaussian":  # scale = RSS / (n - p): (H^-1)_jj / (n - p) times RSS
        rss_f = q[k + 2 : k + 3]
        wide = [AShare(np.broadcast_to(x.v, (2, k)).copy()) for x in (rss_f.sign, rss_f.mant, rss_f.exp)]
        v = yield from mul_float(p, v, Float(*wide))
    root = yield from sqrt_float(p, v)
    se = Float(root.sign, root.mant, root.exp + _const(p, FH // 2, (k,)) - half)  # times D_j = 2^(FH/2 - e_j/2)
    stats = {"deviance": q[k : k + 1]}
    if family == "gaussian":
        stats["rss_tss"] = q[k + 1 : k + 2]
    if family == "poisson":
        stats["llf"] = q[k + 1 : k + 2]
    return se, stats


def glm_program(p: Party, plan: Plan, site: SiteStep) -> Protocol[Outcome]:
    """The committee's protocol for one GLM (module docstring, steps 1-6)."""
    k = len(plan.data["model"]["names"])
    n_counts, n_step = vector_sizes(plan)
    mine = yield from local(p, lambda: site(None))
    stacked, pooled = _pool((yield from site_shares(p, mine, n_counts + n_step)))
    counts = pooled[:n_counts]
    fit = _Fit(np.zeros(k, dtype=np.int64), *split_terms(pooled[n_counts:], k))
    opened = yield from ar.open_all(p, fit.failed)
    if int(opened[0]) != 0:
        return empty_outcome(local_failed=True)
    refused, dropped, withheld = yield from check_rules(p, plan, counts)
    if refused is not None:
        return empty_outcome(refused=refused, message=rule_set(plan).message(refused))
    review = yield from review_bands(p, plan, counts)
    if not (yield from _newton(p, plan, site, fit)):
        return empty_outcome(local_failed=True)
    se, stats = yield from _outputs(p, plan, fit, counts, stacked)
    outputs: list[tuple[str, AShare]] = [(f"se.{part}", getattr(se, part)) for part in FLOAT_PARTS]
    outputs.append(("n", counts[1:2]))
    if not withheld:
        outputs.append(("dropped", dropped))
    for name, value in stats.items():
        outputs += [(f"{name}.{part}", getattr(value, part)) for part in FLOAT_PARTS]
    meta = {
        "plan": plan.data,
        "digest": plan.digest(),
        "coef": fit.beta.tolist(),
        "converged": fit.converged,
        "iterations": fit.iterations,
        "layout": [[name, int(x.size)] for name, x in outputs],
        **review,
    }
    return AShare.concat([x.ravel() for _, x in outputs]), meta


def _pooled_tss(p: Party, per_site: AShare, n_total: AShare, sum_y: AShare, stacked: AShare) -> Protocol[AShare]:
    """TSS = sum M2_i + sum n_i (mean_i - mean)^2 at FH bits (the query planner's pooling of
    variances, site_agent/query/plan.py), mean = sum y / n on shares."""
    mean = yield from divide_fixed(p, sum_y, n_total, FH, 0, FH, COUNT_BITS, 24)
    sites = per_site.shape[0]
    means = AShare(per_site.v[:, :, 1])
    m2 = AShare(per_site.v[:, :, 2])
    n_i = AShare(stacked.v[:, :, 1])
    d = means - AShare(np.broadcast_to(mean.v, (2, sites)).copy())
    d2 = yield from ar.mul_fixed(p, d, d, FH)
    nd2 = yield from ar.mul(p, n_i, d2)
    return (m2 + nd2).sum(axis=0).reshape(1)


# -- the analyst's side -----------------------------------------------------------------------
def assemble_glm(meta: dict[str, Any], shares: list[AShare]) -> pd.DataFrame:
    """The summary DataFrame, shaped like statsmodels' ``summary2().tables[1]``."""
    plan, values = opened_outputs(meta, shares)
    model = plan.data["model"]

    def floats(name: str) -> np.ndarray:
        return opened_floats(values, name)

    coef = np.asarray(meta["coef"], dtype=np.float64) / 2.0**FB
    se = floats("se")
    n = int(decode_int(values["n"])[0])
    k = coef.size
    df_resid = n - k
    gaussian = model["family"] == "gaussian"
    stat = coef / se
    if gaussian:
        pvalues = np.array([distributions.t_two_sided(abs(s), df_resid) for s in stat])
        q = distributions.t_quantile(0.975, df_resid)
    else:
        pvalues = np.array([math.erfc(abs(s) / math.sqrt(2.0)) for s in stat])
        q = Z95
    frame = pd.DataFrame(
        {
            "coef": coef,
            "std err": se,
            "t" if gaussian else "z": stat,
            "P>|t|" if gaussian else "P>|z|": pvalues,
            "[0.025": coef - q * se,
            "0.975]": coef + q * se,
        },
        index=pd.Index(model["names"]),
    )
    if model["family"] == "binomial":
        frame["odds ratio"] = np.exp(coef)
    elif model["family"] == "poisson":
        frame["rate ratio"] = np.exp(coef)
    deviance = float(floats("deviance")[0])
    attrs: dict[str, Any] = {
        "model": model["kind"],
        "family": model["family"],
        "n": n,
        "n_dropped": int(decode_int(values["dropped"])[0]) if "dropped" in values else None,
        "df_model": k - 1,
        "df_resid": df_resid,
        "deviance": deviance,
        "converged": bool(meta["converged"]),
        "iterations": int(meta["iterations"]),
        "plan_digest": meta["digest"],
        "reveals": [{"name": r["name"], "to": r["to"], "what": r["what"]} for r in plan.data["reveals"]],
    }
    if gaussian:
        attrs["r_squared"] = 1.0 - float(floats("rss_tss")[0])
        attrs["scale"] = deviance / df_resid
        attrs["llf"] = -n / 2 * (math.log(2 * math.pi) + math.log(deviance / n) + 1)
    elif model["family"] == "binomial":
        attrs["llf"] = -deviance / 2
    else:
        attrs["llf"] = float(floats("llf")[0])
    frame.attrs.update(attrs)
    return frame


def explain_glm(plan: Plan) -> str:
    """The plan in words: local SQL, the Newton loop on shares, every reveal point."""
    d = plan.data
    m, prm = d["model"], d["params"]
    lines = [f"Plan {plan.digest()[:16]} for:", *("    " + t for t in d["query"].strip().splitlines()), ""]
    lines.append(
        f"{m['kind']} regression ({m['family']} family, canonical link) by Newton's method on shares; "
        f"parameters: {', '.join(m['names'])}."
    )
    lines.append(
        f"Model rules (checked on shares before anything is opened): at least {prm['min_cell_size']} persons in the "
        f"model's rows and in every level of a categorical term; residual df >= {prm['min_residual_df']}"
        + ("" if m["family"] == "gaussian" else f"; events per term >= {prm['min_events_per_term']}")
        + "."
    )
    lines += ["", "1. Local step at every site, in the clear, on its own data:"]
    for q in d["local"]:
        lines.append(f"   [{q['name']}]: ({q['when']}) {q['sql']}")
    lines += [
        "",
        "2. Secret-shared to the committee:",
        "   the counts, at the first step only",
        f"   the Hessian X'WX (upper triangle, {prm['bits']['hessian']} fractional bits and the remainder)",
        f"   the score X'(y - mu) ({prm['bits']['score']} bits and the remainder) and the deviance",
        "",
        "3. MPC steps (their number depends on the Newton steps, about 140 rounds each):",
        "   pool the sites' vectors; open the sum of their failure words",
        "   model rules: comparisons on shares, one bit per rule opened",
        "   each Newton step: equilibrate the Hessian by powers of two, Newton-Schulz solve "
        f"(condition bound {prm['cond']:g}), open beta + step to the committee, local step at the new beta",
        f"   convergence: |D_t - D_(t-1)| < 2^-{prm['tolerance_bits']} D_t for the deviance D, one bit per step, "
        f"at most {prm['max_iterations']} steps, then up to {MAX_POLISH} polishing steps",
        "   outputs: the equilibrated Hessian's inverse (Newton-Schulz, refined once), standard errors and the "
        "fit statistics as floats",
        "",
        "4. Reveal points:",
    ]
    for r in d["reveals"]:
        lines.append(f"   [{r['to']}] {r['name']}: {r['what']}")
    return "\n".join(lines)


MODELS.update(
    {keyword: ModelKind(compile_glm, local_glm, glm_program, assemble_glm, explain_glm) for keyword in FAMILIES}
)
