"""KAPLAN_MEIER: survival curves and the log-rank test on the pooled data (docs/models.md).

::

    KAPLAN_MEIER time, event [BY g[, h ...]] FROM t [JOIN ...] [WHERE ...] [AT t1, t2, ... | AT lo TO hi STEP s]

``event`` is a predicate (``status = 2``) or a number (non-zero: the event happened).

Method. The time axis is a public grid t_0 < ... < t_{J-1}: the ``AT`` times, or else the
schema's grid of the time column. A time in (t_{j-1}, t_j] is reported at t_j (a time at or
below t_0 at t_0; a time above t_{J-1} counts as censored at t_{J-1}), and a censoring at t_j
counts as at risk at t_j, as lifelines does: with times in whole days and a 1-day grid the
curve is exactly lifelines' ``KaplanMeierFitter``. Each site computes in its local SQL, per
group and grid bin, its events d and removals (events and censorings) r, and secret-shares
them. On shares, the committee pools them (sums), forms the numbers at risk
n_j = sum_{j' >= j} r_j' (a reverse cumulative sum, local), and computes on the fine grid

* the curve S_j = prod_{j' <= j} (1 - d_j'/n_j') (divisions by the fixed-point reciprocal of
  :func:`site_agent.query.numeric.divide_fixed` at 30 fractional bits, then a prefix product
  in log2(J) product rounds) and Greenwood's sum V_j = sum_{j' <= j} d/(n (n - d)) (lifelines'
  ``cumulative_sq_``; a term with n = d is 0, as lifelines has it);
* the log-rank test between the groups (lifelines' ``multivariate_logrank_test``, R's
  ``survdiff``): observed O_g = sum_j d_gj, expected E_g = sum_j d_j n_gj / n_j and the
  covariance V_gh = sum_j d_j (n_j - d_j) / (n_j - 1) * n_gj (delta_gh n_j - n_hj) / n_j^2.

Which steps of a curve may be shown is decided on shares by the release rule for survival
curves (:mod:`site_agent.privacy.survival`): every released step's events and censorings hold
0 or >= k persons; groups (the query sets WHERE and BY select) are checked like any cell by the
release rule (:mod:`site_agent.privacy.release`, with the analyst's release ledger).

Revealed, in order (``--explain`` lists them): the group flags; the step pattern (which grid
points end a released step, and whether each group has a curve); per released step the persons
at risk at its start, its events and censorings, S and V at its end; O, E and V of the log-rank
test over the groups with a curve. The analyst's side computes the confidence intervals
(log-log, as lifelines), medians and the chi-square from those.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import sqlglot
import sqlglot.expressions as exp

from ..errors import PolicyRefusal, QueryError, QuerySyntaxError, UnsupportedQuery
from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc import sharing
from ..mpc.fixed import FixedPoint
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare
from ..privacy.survival import block_width, blocks_of, released_steps, step_pattern
from ..query import numeric as nu
from ..query.catalog import DisclosureRules, Schema
from ..query.cells import Cells
from ..query.disclosure import RELEASED
from ..query.failsafe import total, total_sql
from ..query.parse import DIALECT, parse_query
from ..query.plan import COUNT_BITS, Plan, build_plan, cell_expression
from ..query.program import MpcResult, Run
from . import distributions
from .plan_statements import Statement

KEYWORD = "KAPLAN_MEIER"
KIND = "model"
FB = 30  # fractional bits of the curve, Greenwood's sum and the log-rank sums
MAX_POINTS = 100_000  # grid points, as the schema's grids
MAX_LISTED = 1_000  # AT times listed one by one (each is a branch of the local SQL's CASE)
Z95 = 1.959963984540054
COLUMNS = ["time", "at_risk", "observed", "censored", "estimate", "estimate_ci_low", "estimate_ci_high", "greenwood"]
"""The result's columns after the group keys: per group a start row (time 0, everybody at risk,
estimate 1), then one row per released step with events or censorings: its end, the persons at
risk at its start, its events and censorings, the Kaplan-Meier estimate, lifelines' log-log 95%
limits and Greenwood's sum at its end."""
_FP = FixedPoint(FB)
_ONE = 1 << FB
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"\A\s*({_NUMBER})\s+TO\s+({_NUMBER})\s+STEP\s+({_NUMBER})\s*\Z", re.IGNORECASE)
USAGE = "KAPLAN_MEIER time, event [BY g] FROM t [WHERE ...] [AT t1, t2, ... | AT lo TO hi STEP s]"


# -- the statement's text ----------------------------------------------------------------------
@dataclass(frozen=True)
class KmText:
    """The clauses of a KAPLAN_MEIER statement, as text."""

    time: str
    event: str
    by: tuple[str, ...]
    source: str
    where: str | None
    at: str | None


def _words(text: str) -> list[tuple[str, int, int]]:
    """Words outside parentheses and quotes: (upper-case word, start, end)."""
    out, depth, i = [], 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            j = text.find(ch, i + 1)
            i = len(text) if j < 0 else j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif (
            depth == 0
            and (ch.isalpha() or ch == "_")
            and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_."))
        ):
            j = i
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            out.append((text[i:j].upper(), i, j))
            i = j
            continue
        i += 1
    return out


def _split_commas(text: str) -> list[str]:
    parts, depth, start, quote = [], 0, 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def split_statement(text: str) -> KmText:
    """The clauses of ``text``; a :class:`QuerySyntaxError` naming the statement's form otherwise."""
    words = _words(text)
    if not words or words[0][0] != KEYWORD:
        raise QuerySyntaxError(f"syntax error: expected {USAGE}", text=text)

    def find(word: str, after: int) -> tuple[str, int, int] | None:
        return next((w for w in words if w[0] == word and w[1] >= after), None)

    frm = find("FROM", 0)
    if frm is None:
        raise QuerySyntaxError(f"syntax error: FROM is missing; expected {USAGE}", text=text)
    by = find("BY", 0)
    by = by if by is not None and by[1] < frm[1] else None
    where = find("WHERE", frm[2])
    ats = [w for w in words if w[0] == "AT" and w[1] > (where or frm)[2]]
    at = ats[-1] if ats else None
    head = _split_commas(text[words[0][2] : (by or frm)[1]])
    if len(head) != 2 or not all(head):
        raise QuerySyntaxError(f"syntax error: give a time and an event: {USAGE}", text=text)
    keys = tuple(_split_commas(text[by[2] : frm[1]])) if by is not None else ()
    if by is not None and not all(keys):
        raise QuerySyntaxError(f"syntax error: BY takes group keys: {USAGE}", text=text)
    end = at[1] if at is not None else len(text)
    source = text[frm[2] : where[1] if where is not None else end].strip()
    cond = text[where[2] : end].strip() if where is not None else None
    return KmText(head[0], head[1], keys, source, cond, text[at[2] :].strip() if at is not None else None)


def grid_points(at: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """The ``AT`` clause's times (strictly increasing), and (lo, hi, step) for ``lo TO hi STEP s``."""
    m = _RANGE.match(at)
    if m:
        lo, hi, step = (float(g) for g in m.groups())
        if not (math.isfinite(lo) and math.isfinite(hi) and step > 0 and hi > lo):
            raise UnsupportedQuery("AT lo TO hi STEP s needs lo < hi and s > 0")
        count = round((hi - lo) / step) + 1
        if count > MAX_POINTS:
            raise UnsupportedQuery(f"AT: at most {MAX_POINTS} times")
        return lo + step * np.arange(count), (lo, lo + step * (count - 1), step)
    parts = _split_commas(at)
    if not all(re.fullmatch(_NUMBER, p) for p in parts):
        raise UnsupportedQuery("AT takes number literals t1, t2, ... or lo TO hi STEP s")
    if len(parts) > MAX_LISTED:
        raise UnsupportedQuery(f"AT lists at most {MAX_LISTED} times; for a regular grid write AT lo TO hi STEP s")
    points = np.array([float(p) for p in parts])
    if not np.all(np.isfinite(points)) or np.any(np.diff(points) <= 0):
        raise UnsupportedQuery("AT times must increase strictly")
    return points, None


def _is_predicate(text: str) -> bool:
    try:
        node = sqlglot.parse_one(text, dialect=DIALECT)
    except sqlglot.errors.ParseError:
        return False
    node = node.unnest()
    return isinstance(node, exp.Predicate | exp.Connector | exp.Not | exp.Boolean | exp.In | exp.Between)


# -- the plan ----------------------------------------------------------------------------------
def _bin_sql(time: exp.Expression, points: np.ndarray, regular: tuple[float, float, float] | None) -> exp.Expr:
    """The grid bin of a row: the first grid point at or above its time, clamped to the grid."""
    last = len(points) - 1
    if regular is not None:
        lo, _, step = regular
        scaled = exp.Div(
            this=exp.Paren(this=exp.Sub(this=time.copy(), expression=exp.convert(lo))), expression=exp.convert(step)
        )
        up = exp.Cast(
            this=exp.func("CEIL", exp.Sub(this=scaled, expression=exp.convert(1e-9))), to=exp.DataType.build("BIGINT")
        )
        return exp.func("LEAST", exp.func("GREATEST", up, exp.Literal.number(0)), exp.Literal.number(last))
    ifs = [
        exp.If(this=exp.LTE(this=time.copy(), expression=exp.convert(float(t))), true=exp.Literal.number(j))
        for j, t in enumerate(points[:-1])
    ]
    return exp.Case(ifs=ifs, default=exp.Literal.number(last)) if ifs else exp.Literal.number(0)


def compile_kaplan_meier(
    text: str, schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None = None
) -> Plan:
    """The plan of a KAPLAN_MEIER statement: the plan of ``SELECT g, COUNT(*) FROM t WHERE ...
    GROUP BY g`` (the groups are query sets under the release rule), plus the curve's local
    histogram of events and removals per group and grid bin, its MPC steps and reveal points."""
    if rules.statement_kinds is not None and KIND not in rules.statement_kinds:
        allowed = ", ".join(sorted(rules.statement_kinds)) or "none"
        raise rules.refusal(
            "statement_kinds", f"{KIND!r} statements are not allowed (allowed: {allowed})", "check_kind", KIND
        )
    if rules.round_counts:
        raise PolicyRefusal(
            "consortium",
            "round_counts",
            "KAPLAN_MEIER releases exact counts per step, and a site's policy rounds every released count",
        )
    st = split_statement(text)
    event = st.event if _is_predicate(st.event) else f"({st.event}) <> 0"
    complete = f"({st.time}) IS NOT NULL AND ({event}) IS NOT NULL"
    where = f"({st.where}) AND {complete}" if st.where else complete
    keys = ", ".join(st.by)
    items = (f"{keys}, " if keys else "") + f"COUNT(*) AS n, SUM({st.time}) AS km_time, PROPORTION({event}) AS km_event"
    support = f"SELECT {items} FROM {st.source} WHERE {where}" + (f" GROUP BY {keys}" if keys else "")
    open_rules = replace(rules, statement_kinds=None)
    query = parse_query(support, schema, open_rules, sites)
    kinds = [a.kind for a in query.aggregates]
    if kinds != ["count_star", "sum", "proportion"] or len(query.keys) != len(st.by) or query.post.active:
        raise UnsupportedQuery(f"cannot read the statement as {USAGE}")  # clauses smuggled into one
    if any(k.site for k in query.keys):
        raise UnsupportedQuery("KAPLAN_MEIER ... BY SITE is not supported")
    time_expr, indicator = query.aggregates[1].args[0], query.aggregates[2].args[0]
    if st.at is not None:
        points, regular = grid_points(st.at)
    else:
        try:
            median = parse_query(f"SELECT MEDIAN({st.time}) AS m FROM {st.source}", schema, open_rules, sites)
        except QueryError:
            raise UnsupportedQuery(
                f"{st.time}: the time needs a public grid: a column with a grid in the schema, or AT t1, t2, ..."
            ) from None
        grid = median.aggregates[0].grid
        assert grid is not None
        lo, hi, step = grid
        count = round((hi - lo) / step) + 1
        points, regular = lo + step * np.arange(count), (lo, hi, step)
    plan = build_plan(replace(query, aggregates=query.aggregates[:1], text=text), open_rules)
    data = dict(plan.data)
    last = float(points[-1])
    cell = cell_expression(query)
    events = exp.Sum(
        this=exp.Case(
            ifs=[exp.If(this=exp.LTE(this=time_expr.copy(), expression=exp.convert(last)), true=indicator.copy())],
            default=exp.Literal.number(0),
        )
    )
    bin_expr = total(_bin_sql(time_expr, points, regular))
    sel = query.source.copy()
    sel.set(
        "expressions",
        [
            exp.alias_(cell.copy(), "cell"),
            exp.alias_(bin_expr, "bin"),
            exp.alias_(events, "d"),
            exp.alias_(exp.Count(this=exp.Star()), "r"),
        ],
    )
    sel = sel.where(query.where.copy()) if query.where is not None else sel
    group = [bin_expr.copy()] if isinstance(cell, exp.Literal) else [cell.copy(), bin_expr.copy()]
    local_sql = total_sql(sel.group_by(*group)).sql(DIALECT)
    bins = len(points)
    width = block_width(bins, rules.threshold)
    data["local"] = [
        *plan.data["local"],
        {"name": "km", "sql": local_sql, "columns": ["cell", "bin", "d", "r"], "bins": bins},
    ]
    km_inputs = [{"name": f"km_{c}", "query": "km", "column": c, "encoding": "int", "fill": 0} for c in ("d", "r")]
    data["inputs"] = [*plan.data["inputs"][:-1], *km_inputs, plan.data["inputs"][-1]]
    steps = [dict(s) for s in plan.data["steps"]]
    for s in steps:
        if s["op"] == "pool":
            s["inputs"] = [*s["inputs"], "km_d", "km_r"]
    data["steps"] = [*steps[:-1], {"op": "km_steps"}, {"op": "km_curve"}, {"op": "logrank"}, steps[-1]]
    data["reveals"] = [*plan.data["reveals"], *_REVEALS]
    data["statement"] = KEYWORD
    data["kind"] = KIND
    data["km"] = {
        "time": time_expr.sql(DIALECT),
        "event": indicator.sql(DIALECT),
        "bins": bins,
        "width": width,
        "blocks": -(-bins // width),
        **({"grid": list(regular)} if regular is not None else {"points": points.tolist()}),
    }
    return Plan(data)


def _reveal(name: str, encoding: str, shape: str, what: str) -> dict[str, Any]:
    return {"name": name, "value": name, "encoding": encoding, "support": -1, "shape": shape, "what": what}


_REVEALS = [
    _reveal(
        "km_steps",
        "int",
        "groups x grid bins, and groups (to the committee and the analyst)",
        "which grid points end a released step of each released group's curve (steps merge grid bins until "
        "each step's events and censorings hold 0 or >= k persons), and whether the group's curve is released",
    ),
    _reveal(
        "km_curve",
        "mixed",
        "released steps",
        "per released step: persons at risk at its start, events and censorings in it; the Kaplan-Meier "
        "estimate and Greenwood's sum at its end",
    ),
    _reveal(
        "logrank",
        "mixed",
        "groups, groups x groups",
        "log-rank test over the groups with a curve: observed and expected events per group and their "
        "covariance matrix (as R's survdiff)",
    ),
]


# -- the MPC steps -----------------------------------------------------------------------------
def _const(p: Party, value: int, shape: tuple[int, ...]) -> AShare:
    return ar.constant(p, np.full(shape, value, dtype=np.int64).view(np.uint64), AShare)


def _public(p: Party, values: np.ndarray) -> AShare:
    return ar.constant(p, np.asarray(values, dtype=np.int64).view(np.uint64), AShare)


def _released_groups(run: Run) -> np.ndarray:
    """Public 0/1 per group: the group (its COUNT(*) cell) passed the release rule."""
    flags = run.flags.reshape(len(run.plan.data["supports"]), -1)
    row = flags[int(run.plan.data["outputs"][0]["support"])]
    return np.asarray(row == RELEASED, dtype=np.int64)


def _at_risk(removals: AShare) -> AShare:
    """n_j = sum_{j' >= j} r_j' along the last axis (local)."""
    return AShare(np.cumsum(removals.v[..., ::-1], axis=-1, dtype=np.uint64)[..., ::-1].copy())


def _pad(x: AShare, width: int) -> AShare:
    out = np.zeros((*x.v.shape[:-1], width), dtype=np.uint64)
    out[..., : x.v.shape[-1]] = x.v
    return AShare(out)


def km_steps(run: Run, step: dict[str, Any]) -> Protocol[None]:
    """Choose the released steps on shares (:func:`site_agent.privacy.survival.step_pattern`) and
    open the pattern: ends of steps per block and whole-curve flags, 0 for withheld groups."""
    p, km = run.p, run.plan.data["km"]
    d, r = run.share("km_d"), run.share("km_r")
    width = int(km["width"])
    k = int(run.plan.data["params"]["min_cell_size"])
    ends, whole = yield from step_pattern(p, blocks_of(d, width), blocks_of(r - d, width), k)
    groups, blocks = ends.shape
    ends = yield from ar.mul(p, ends, AShare(np.repeat(whole.v[:, :, None], blocks, axis=2)))
    released = _released_groups(run)
    both = AShare.concat([ends.mul_public(released[:, None]).reshape(-1), whole.mul_public(released)])
    opened = yield from ar.open_all(p, both)
    run.public["km_ends"] = opened[: groups * blocks].view(np.int64).reshape(groups, blocks)
    run.public["km_whole"] = opened[groups * blocks :].view(np.int64)
    run.opened["km_steps"] = _public(p, opened.view(np.int64))


def km_curve(run: Run, step: dict[str, Any]) -> Protocol[None]:
    """The curve and Greenwood's sum on the fine grid, opened at the ends of the released steps
    with each step's persons at risk, events and censorings."""
    p = run.p
    d, r = run.share("km_d"), run.share("km_r")
    groups, bins = d.shape
    n = _at_risk(r)
    m = groups * bins
    left = n - d
    zero = yield from bo.lt(p, AShare.concat([n.reshape(-1), left.reshape(-1)]), _const(p, 1, (2 * m,)))
    n_empty, none_left = zero[:m], zero[m:]
    prods = yield from ar.mul(
        p,
        AShare.concat([n.reshape(-1), d.reshape(-1)]),
        AShare.concat([left.reshape(-1), _const(p, 1, (m,)) - none_left]),
    )
    # d/n (0 where n = 0) and Greenwood's d/(n (n - d)) (0 where n = d, as lifelines)
    ratio = yield from nu.divide_fixed(
        p,
        AShare.concat([d.reshape(-1), prods[m:]]),
        AShare.concat([n.reshape(-1) + n_empty, prods[:m] + none_left]),
        0,
        0,
        FB,
        2 * COUNT_BITS,
        FB,
    )
    factor = _const(p, _ONE, (m,)) - ratio[:m]
    everyone = none_left - n_empty  # [n = d > 0]: the factor is exactly 0, not 0 up to the reciprocal's error
    cut = yield from ar.mul(p, factor, everyone)
    surv = (factor - cut).reshape(groups, bins)
    shift = 1
    while shift < bins:  # prefix product (Hillis and Steele), log2(bins) product rounds
        prod = yield from ar.mul_fixed(p, surv[:, shift:], surv[:, :-shift], FB)
        surv = AShare.concat([surv[:, :shift], prod], axis=1)
        shift *= 2
    greenwood = ratio[m:].reshape(groups, bins).cumsum(axis=1)
    zeros = np.zeros((2, groups, 1), dtype=np.uint64)
    cum_d = AShare(np.concatenate([zeros, d.cumsum(axis=1).v], axis=2))
    cum_c = AShare(np.concatenate([zeros, (r - d).cumsum(axis=1).v], axis=2))
    width = int(run.plan.data["km"]["width"])
    g_idx, first, last = _step_index(run.public["km_ends"], run.public["km_whole"], bins, width)
    run.opened["km_at_risk"] = AShare(n.v[:, g_idx, first])
    run.opened["km_events"] = AShare(cum_d.v[:, g_idx, last + 1] - cum_d.v[:, g_idx, first])
    run.opened["km_censored"] = AShare(cum_c.v[:, g_idx, last + 1] - cum_c.v[:, g_idx, first])
    run.opened["km_survival"] = AShare(surv.v[:, g_idx, last])
    run.opened["km_greenwood"] = AShare(greenwood.v[:, g_idx, last])


def _step_index(
    ends: np.ndarray, whole: np.ndarray, bins: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group, first bin, last bin) of every released step, groups in order (public)."""
    rows = [(g, a, b) for g in np.flatnonzero(whole) for a, b in released_steps(ends[g], bins, width)]
    out = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return out[:, 0], out[:, 1], out[:, 2]


def logrank(run: Run, step: dict[str, Any]) -> Protocol[None]:
    """Observed, expected and covariance of the log-rank test over the groups with a curve.

    Computed over every group, those without a curve masked to zero (public flags), so that the
    rounds do not depend on which groups have one; opened for the groups with a curve when there
    are at least two."""
    p = run.p
    d, r = run.share("km_d"), run.share("km_r")
    g, bins = d.shape
    inc = run.public["km_whole"].astype(np.int64)
    g_in = np.flatnonzero(inc)
    dg, ng = d.mul_public(inc[:, None]), _at_risk(r).mul_public(inc[:, None])
    big_d, big_n = dg.sum(axis=0), ng.sum(axis=0)
    few = yield from bo.lt(
        p, AShare.concat([big_n, big_n]), AShare.concat([_const(p, 1, (bins,)), _const(p, 2, (bins,))])
    )
    n0, n1 = few[:bins], few[bins:]
    den_p = AShare(np.broadcast_to((big_n + n0).v[:, None, :], (2, g, bins)).reshape(2, -1).copy())
    den_q = ar.add_public(p, big_n, np.asarray(-1, dtype=np.int64).view(np.uint64)) + n1.mul_public(2)
    ratio = yield from nu.divide_fixed(
        p, AShare.concat([ng.reshape(-1), big_n - big_d]), AShare.concat([den_p, den_q]), 0, 0, FB, COUNT_BITS, FB
    )
    share = ratio[: g * bins].reshape(g, bins)  # n_gj / n_j
    q = ratio[g * bins :]  # (n_j - d_j) / (n_j - 1)
    pairs = [(a, b) for a in range(g) for b in range(a, g)]
    left = AShare.concat([share[a] for a, _ in pairs])
    right = AShare.concat([share[b] for _, b in pairs])
    pp = yield from ar.mul_fixed(p, left, right, FB)
    diag = np.array([1 if a == b else 0 for a, b in pairs])
    w = AShare(np.repeat(diag, bins)[None, :].astype(np.uint64) * left.v) - pp
    qw = yield from ar.mul_fixed(p, w, AShare(np.tile(q.v, (1, len(pairs)))), FB)
    ds = AShare(np.tile(big_d.v, (1, g + len(pairs))))
    terms = yield from ar.mul(p, ds, AShare.concat([share.reshape(-1), qw]))
    expected = terms[: g * bins].reshape(g, bins).sum(axis=1)
    cov = terms[g * bins :].reshape(len(pairs), bins).sum(axis=1)
    full = np.zeros((2, g, g), dtype=np.uint64)
    for i, (a, b) in enumerate(pairs):
        full[:, a, b] = full[:, b, a] = cov.v[:, i]
    kept = g_in if len(g_in) >= 2 else g_in[:0]
    run.opened["logrank_observed"] = dg.sum(axis=1)[kept]
    run.opened["logrank_expected"] = expected[kept]
    run.opened["logrank_variance"] = AShare(full[:, kept][:, :, kept].reshape(2, -1))


STEPS = {"km_steps": km_steps, "km_curve": km_curve, "logrank": logrank}
STEP_WORDS = {
    "km_steps": "release rule for curves: a greedy scan over blocks of grid bins, on shares, ends a step where "
    "its events and censorings (and those after it) hold 0 or >= k persons; open which blocks end a step",
    "km_curve": "numbers at risk (reverse sums), d/n and Greenwood terms (Newton reciprocal), the curve as a "
    "prefix product; open the released steps",
    "logrank": "log-rank test: expected events and covariance over the grid (Newton reciprocal); open O, E, V",
}


# -- the analyst's side ------------------------------------------------------------------------
def _reconstruct(results: list[MpcResult], name: str) -> np.ndarray:
    shares = [r.opened[name] for r in results]
    assert all(isinstance(s, AShare) for s in shares)
    return np.asarray(sharing.reconstruct(shares).view(np.int64))  # type: ignore[arg-type]


def loglog_interval(survival: np.ndarray, greenwood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lifelines' default 95% interval (exponential Greenwood, log(-log S)), NaN filled with 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(survival)
        spread = Z95 * np.sqrt(greenwood) / v
        lower = np.exp(-np.exp(np.log(-v) - spread))
        upper = np.exp(-np.exp(np.log(-v) + spread))
    return np.nan_to_num(lower, nan=1.0), np.nan_to_num(upper, nan=1.0)


def grid_of(plan: Plan) -> np.ndarray:
    """The plan's public grid points."""
    km = plan.data["km"]
    if "grid" in km:
        lo, _, step = km["grid"]
        return float(lo) + float(step) * np.arange(int(km["bins"]))
    return np.asarray(km["points"], dtype=np.float64)


def assemble(plan: Plan, results: list[MpcResult]) -> pd.DataFrame:
    """The released curves as one long table (one row per released step with observed or censored
    persons), with ``attrs``: the groups (size, whether a curve is shown, median), the log-rank
    test and k. :class:`KaplanMeier` reads it like lifelines' fitter."""
    km, k = plan.data["km"], int(plan.data["params"]["min_cell_size"])
    bins, width, blocks = int(km["bins"]), int(km["width"]), int(km["blocks"])
    cells = Cells.of(plan.dims, plan.grouping_sets)
    flags = results[0].flags.reshape(len(plan.data["supports"]), -1)[int(plan.data["outputs"][0]["support"])]
    pattern = _reconstruct(results, "km_steps")
    groups = cells.out
    ends, whole = pattern[: groups * blocks].reshape(groups, blocks), pattern[groups * blocks :]
    g_idx, _, last = _step_index(ends, whole, bins, width)
    sizes = _reconstruct(results, plan.data["outputs"][0]["reveals"][0])
    at_risk, events, censored = (_reconstruct(results, f"km_{c}") for c in ("at_risk", "events", "censored"))
    surv = _FP.decode(_reconstruct(results, "km_survival").view(np.uint64))
    green = _FP.decode(_reconstruct(results, "km_greenwood").view(np.uint64))
    lower, upper = loglog_interval(surv, green)
    points = grid_of(plan)
    names = [key["name"] for key in plan.keys]
    labels = [tuple(key["domain"][i] for key, i in zip(plan.keys, lab, strict=True)) for lab in cells.labels()]
    start = min(0.0, float(points[0]))
    rows: list[list[Any]] = []
    for i in range(len(g_idx)):
        if i == 0 or g_idx[i] != g_idx[i - 1]:  # the curve starts at 1 with the whole group at risk
            rows.append([*labels[g_idx[i]], start, int(at_risk[i]), 0, 0, 1.0, 1.0, 1.0, 0.0])
        if events[i] + censored[i] == 0:
            continue  # nothing happens in the step: the curve goes on unchanged
        rows.append(
            [
                *labels[g_idx[i]],
                float(points[last[i]]),
                int(at_risk[i]),
                int(events[i]),
                int(censored[i]),
                float(surv[i]),
                float(lower[i]),
                float(upper[i]),
                float(green[i]),
            ]
        )
    columns = [*names, *COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    released = [int(g) for g in np.flatnonzero(flags == RELEASED)]
    group_info = []
    for g in range(groups):
        keys = dict(zip(names, labels[g], strict=True))
        n: Any = int(sizes[released.index(g)]) if g in released else (0 if flags[g] == 2 else f"<{k}")
        if n == 0 and any(v == "(other)" for v in labels[g]):
            continue
        part = frame[np.all([frame[c] == v for c, v in keys.items()], axis=0)] if names else frame
        median = float(part["time"][part["estimate"] <= 0.5].min()) if bool(whole[g]) else math.nan
        if bool(whole[g]) and math.isnan(median):
            median = math.inf
        group_info.append({**keys, "n": n, "curve": bool(whole[g]), "median": median})
    frame.attrs["statement"] = KEYWORD
    frame.attrs["groups"] = group_info
    frame.attrs["by"] = names
    frame.attrs["min_cell_size"] = k
    frame.attrs["logrank"] = _logrank(results, [labels[g] for g in np.flatnonzero(whole)])
    return frame


def _logrank(results: list[MpcResult], labels: list[tuple[Any, ...]]) -> dict[str, Any] | None:
    if len(labels) < 2:
        return None
    observed = _reconstruct(results, "logrank_observed").astype(np.float64)
    expected = _FP.decode(_reconstruct(results, "logrank_expected").view(np.uint64))
    cov = _FP.decode(_reconstruct(results, "logrank_variance").view(np.uint64)).reshape(len(labels), len(labels))
    z = (observed - expected)[:-1]
    stat = float(z @ np.linalg.pinv(cov[:-1, :-1]) @ z)
    df = len(labels) - 1
    return {
        "groups": [list(lab) for lab in labels],
        "observed": observed.tolist(),
        "expected": expected.tolist(),
        "variance": cov.tolist(),
        "test_statistic": stat,
        "degrees_of_freedom": df,
        "p_value": distributions.chi2_sf(stat, df),
    }


class KaplanMeier:
    """One group's released curve, read like lifelines' ``KaplanMeierFitter`` after ``fit``.

    ``KaplanMeier(frame, sex=1)`` picks the group by its key values (no keys: the only group).
    """

    def __init__(self, frame: pd.DataFrame, **group: Any) -> None:
        if frame.attrs.get("statement") != KEYWORD:
            raise ValueError("not a KAPLAN_MEIER result")
        keys = frame.attrs["by"]
        if set(group) != set(keys):
            raise ValueError(f"name the group by its keys: {', '.join(keys) or 'none'}")
        rows = frame
        for c, v in group.items():
            rows = rows[rows[c] == v]
        self.info = next(g for g in frame.attrs["groups"] if all(g[c] == v for c, v in group.items()))
        self.label = "KM_estimate"
        self._rows = rows.reset_index(drop=True)

    @property
    def timeline(self) -> np.ndarray:
        return np.asarray(self._rows["time"], dtype=np.float64)

    @property
    def survival_function_(self) -> pd.DataFrame:
        return pd.DataFrame(
            {self.label: self._rows["estimate"].to_numpy()}, index=pd.Index(self.timeline, name="timeline")
        )

    @property
    def confidence_interval_(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                f"{self.label}_lower_0.95": self._rows["estimate_ci_low"].to_numpy(),
                f"{self.label}_upper_0.95": self._rows["estimate_ci_high"].to_numpy(),
            },
            index=pd.Index(self.timeline, name="timeline"),
        )

    @property
    def median_survival_time_(self) -> float:
        return float(self.info["median"])

    @property
    def event_table(self) -> pd.DataFrame:
        """Per released step (the start row left out): removed, observed, censored, at_risk (at
        the step's start)."""
        t = self._rows.iloc[1:]
        return pd.DataFrame(
            {
                "removed": (t["observed"] + t["censored"]).to_numpy(),
                "observed": t["observed"].to_numpy(),
                "censored": t["censored"].to_numpy(),
                "at_risk": t["at_risk"].to_numpy(),
            },
            index=pd.Index(t["time"].to_numpy(), name="event_at"),
        )


def logrank_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The log-rank test as R's survdiff prints it: N, observed, expected, (O-E)^2/E, (O-E)^2/V
    per group; ``attrs`` hold chi-square, df and p."""
    test = frame.attrs.get("logrank")
    if test is None:
        raise ValueError("no log-rank test: fewer than two groups have a released curve")
    o, e = np.array(test["observed"]), np.array(test["expected"])
    v = np.diag(np.array(test["variance"]))
    out = pd.DataFrame(
        {"observed": o, "expected": e, "(O-E)^2/E": (o - e) ** 2 / e, "(O-E)^2/V": (o - e) ** 2 / v},
        index=pd.Index([", ".join(map(str, g)) for g in test["groups"]], name="group"),
    )
    out.attrs.update({k: test[k] for k in ("test_statistic", "degrees_of_freedom", "p_value")})
    return out


def describe(plan: Plan) -> list[str]:
    """The statement's lines in ``--explain``: time, event, grid, steps and what is released."""
    km, k = plan.data["km"], plan.data["params"]["min_cell_size"]
    points = grid_of(plan)
    grid = (
        f"{len(points)} points from {points[0]:g} to {points[-1]:g} step {km['grid'][2]:g}"
        if "grid" in km
        else f"{len(points)} points {', '.join(f'{t:g}' for t in points[:6])}{', ...' if len(points) > 6 else ''}"
    )
    return [
        f"Kaplan-Meier: time {km['time']}, event {km['event']}; public time grid: {grid}. A time in "
        "(t_j-1, t_j] is reported at t_j; a time after the last point is censored there.",
        f"Released steps merge blocks of {km['width']} grid bin(s) ({km['blocks']} blocks), chosen on shares, until "
        f"each step's events and censorings hold 0 or >= {k} persons; a group without such steps has no curve. "
        "The log-rank test runs on the fine grid over the groups with a curve.",
    ]


STATEMENT = Statement(KEYWORD, compile_kaplan_meier, STEPS, assemble, STEP_WORDS, describe)
