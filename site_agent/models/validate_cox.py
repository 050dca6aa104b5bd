"""VALIDATE COX: a given Cox model's concordance on the pooled rows (external validation).

Statement (docs/models.md, "External validation of a Cox model")::

    VALIDATE COX <time>, <event> ~ <b1>*<term> + ... FROM t [WHERE ...] [BY col]
             [GRID lo TO hi STEP s]

The right-hand side is the model's linear predictor (its risk score) with public coefficients,
written as for VALIDATE LOGISTIC (:func:`.validate.parse_linear_predictor`; an intercept may be
given and changes nothing). The time is a column with a public grid in the schema, as for COX
(times rounded down to it; rows outside it dropped); the event any 0/1 expression.

Per group (the whole WHERE set, or each value of the BY column's public domain): n, events and
Harrell's C of the score (lifelines' ``concordance_index(T, -score, E)``), by the machinery
COX uses for its fitted coefficients (:mod:`.concordance`). Only the pooling differs: the
coefficients are known when the statement is compiled, so the one local step gives each
group's counts and histograms at once.

Method:

1. *Local step*, each site in the clear: per group, rows of the WHERE set, complete cases
   (time on the grid, event 0 or 1, score not NULL), distinct persons, events, and for each
   term of the score the persons with it non-zero and zero; per group, time bin and risk bin,
   events and rows (:mod:`.concordance`).
2. Pooled on shares (:func:`site_agent.models.statement.site_sum`: only the sums are needed).
3. The release rule of VALIDATE LOGISTIC's groups (:func:`.validate.release_groups`): a group
   is released when its persons, events and censored rows each number at least k; its dropped
   rows when 0 or at least k; a term of the score that is 0, or not 0, for 1..k-1 persons of a
   released group refuses the statement (``term_isolation``).
4. C of every released group at once (:func:`.concordance.concordance`).

Risk grid: with ``GRID lo TO hi STEP s``, bins of width s from lo (scores beyond clamped to the
ends); without, :func:`.concordance.risk_bins` equal bins over the range the score can take
on the columns' public bounds (a grid or a numeric domain; ``C(col)[level]`` in [0, 1]), so
every numeric factor then needs bounds (``I(sql)`` needs GRID).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from ..errors import QuerySyntaxError, UnsupportedQuery
from ..mpc import arithmetic as ar
from ..mpc.fixed import decode_int, encode_int
from ..mpc.party import Party, Protocol, local
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..privacy.models import ModelRules
from ..query.catalog import DisclosureRules, Schema
from ..query.failsafe import failure_word
from ..query.plan import Plan
from . import concordance
from .cox import interval_product, public_bounds
from .formula import split_top
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
    site_sum,
    with_ledger,
)
from .validate import (
    _NAME,
    Term,
    _clauses,
    group_bands,
    group_counts_sql,
    group_rows_sql,
    parse_linear_predictor,
    release_groups,
    scored_source,
)

KIND = "VALIDATE COX"
"""The model kind (two words: never the first word of a statement, so reached through VALIDATE)."""
INTS = ("n_where", "n", "persons", "pos")
"""Per group counts; then, per term j of the score, the persons with it non-zero, zero."""
MAX_CELLS = 2**22
"""groups x time bins x risk bins at most (a GRID clause; without one the grid keeps to about
:data:`.concordance.CELLS`)."""


# -- the statement ----------------------------------------------------------------------------
def _score_bounds(terms: list[Term], column: Any) -> tuple[float, float]:
    """The range of the score over the columns' public bounds (an indicator in [0, 1])."""
    lo = hi = 0.0
    for t in terms:
        parts = [(t.coef, t.coef)]
        for source, _, is_level in t.factors:
            if is_level:
                parts.append((0.0, 1.0))
            elif re.fullmatch(_NAME, source) and column(source) is not None:
                parts.append(public_bounds(column(source), source))
            else:
                raise UnsupportedQuery(f"VALIDATE COX: {source} has no public bounds; give GRID lo TO hi STEP s")
        a, b = interval_product(parts)
        lo, hi = lo + a, hi + b
    return lo, hi


def compile_validate_cox(
    statement: Statement, schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None
) -> Plan:
    """The plan of ``VALIDATE COX ...`` (module docstring); called by VALIDATE's compiler."""
    head = re.match(r"\s*COX\b(.*)$", statement.body, re.IGNORECASE | re.DOTALL)
    sides = split_top(head.group(1), "~") if head else []
    outcome = [x.strip() for x in split_top(sides[0], ",")] if len(sides) == 2 else []
    if len(outcome) != 2 or not all(outcome):
        raise QuerySyntaxError("VALIDATE COX needs 'time, event ~ linear predictor'")
    time_name, event_text = outcome
    if not re.fullmatch(_NAME, time_name):
        raise QuerySyntaxError("VALIDATE COX: the time must be a column (with a grid in the schema)")
    terms = parse_linear_predictor(sides[1])
    tail, clauses = _clauses(statement.tail)
    for word in ("threshold", "without"):
        if word in clauses:
            raise UnsupportedQuery(f"VALIDATE COX takes no {word.upper()} clause")
    by = clauses["by"][0].lower() if "by" in clauses else None
    src = scored_source(tail, [time_name, event_text], terms, by, schema, rules, sites)
    time_col = src.column(time_name.lower())
    if time_col is None or time_col.grid is None:
        raise UnsupportedQuery(f"VALIDATE COX: the time column {time_name} needs a grid [lo, hi, step] in the schema")
    lo, hi, step = (float(v) for v in time_col.grid)
    time_bins = math.floor((hi - lo) / step + 1e-9) + 1
    groups = len(src.groups)
    if "grid" in clauses:
        r_lo, r_hi, r_step = (float(v) for v in clauses["grid"])
        if not (r_step > 0 and r_hi > r_lo and math.isfinite(r_hi - r_lo)):
            raise UnsupportedQuery("GRID lo TO hi STEP s needs lo < hi and s > 0")
        risk_bins = round((r_hi - r_lo) / r_step) + 1
        if groups * time_bins * risk_bins > MAX_CELLS:
            raise UnsupportedQuery(
                f"{groups} group(s) x {time_bins} time bins x {risk_bins} risk bins; at most {MAX_CELLS} in all"
            )
    else:
        risk_bins = concordance.risk_bins(groups * time_bins)
        r_lo, r_step = concordance.risk_grid(*_score_bounds(terms, src.column), risk_bins)
    inner = group_rows_sql(
        src.query,
        {"time": src.outcomes[0], "y": src.outcomes[1], "eta": src.eta},
        src.products,
        src.by_expr,
        src.groups,
    )
    rows = (
        "SELECT *, time IS NOT NULL AND eta IS NOT NULL AND y IN (0.0, 1.0) "
        f"AND time BETWEEN CAST('{lo!r}' AS DOUBLE) AND CAST('{hi!r}' AS DOUBLE) AS ok "
        f"FROM ({inner}) AS _rows WHERE gi IS NOT NULL"
    )
    cell = f"CAST(FLOOR((time - CAST('{lo!r}' AS DOUBLE)) / CAST('{step!r}' AS DOUBLE) + 1e-9) AS BIGINT)"
    histograms = (
        f"SELECT gi, {cell} AS cell, {concordance.risk_bin_sql('eta', risk_bins)} AS rbin, SUM(y) AS events, "
        f"COUNT(*) AS n FROM ({rows}) AS _h WHERE ok GROUP BY gi, cell, rbin"
    )
    data = {
        "version": 1,
        "query": statement.text,
        "model": {
            "kind": KIND,
            "time": time_name.lower(),
            "event": event_text,
            "coefficients": [[t.label, t.coef] for t in terms],
            "by": by,
            "groups": src.groups,
            "terms": len(src.products),
            "time_grid": [lo, hi, step, time_bins],
            "risk_grid": [r_lo, r_step, risk_bins],
        },
        "params": {"min_cell_size": rules.threshold},
        "keys": [],
        "grouping_sets": [[]],
        "local": [
            {
                "name": "groups",
                "sql": f"SELECT gi, {group_counts_sql(src.query, len(src.products))} FROM ({rows}) AS _g GROUP BY gi",
                "when": "first step",
            },
            {"name": "histograms", "sql": concordance.fill_grid(histograms, r_lo, r_step), "when": "first step"},
        ],
        "reveals": _reveals(),
    }
    return with_ledger(Plan(data), src.query, src.conditions)  # with BY, each group is a query set


def _reveals() -> list[dict[str, Any]]:
    committee = [
        ("local_failed", "sum of the sites' secret failure words (0: every local step ran)"),
        ("released", "per group: whether its persons, events and censored rows each number at least k"),
        ("dropped_small", "per group: whether its dropped rows lie in 1..k-1 (then withheld)"),
        ("term_isolation", "whether a term of the score is 0, or not 0, at 1..k-1 persons of a released group"),
    ]
    analyst = [
        ("n", "per released group: complete cases and events"),
        ("concordance", "per released group: Harrell's C of the score (risks on the public grid, ties 1/2)"),
        ("dropped", "per released group: rows dropped (time off the grid, event not 0/1, NULL score)"),
    ]
    return [{"name": n, "to": "committee", "what": w} for n, w in committee] + [
        {"name": n, "to": "analyst", "what": w} for n, w in analyst
    ]


# -- the local step ---------------------------------------------------------------------------
def _names(plan: Plan) -> list[str]:
    return [*INTS, *(name for j in range(int(plan.data["model"]["terms"])) for name in (f"nz{j}", f"z{j}"))]


def _shape(plan: Plan) -> tuple[int, int, int]:
    m = plan.data["model"]
    return len(m["groups"]), int(m["time_grid"][3]), int(m["risk_grid"][2])


def _size(plan: Plan) -> int:
    return concordance.input_size(_shape(plan)) + len(plan.data["model"]["groups"]) * len(_names(plan))


def local_validate_cox(plan: Plan, con: Any, holds_data: bool, params: dict[str, Any] | None) -> U64:
    """A site's vector: failure word, per group counts, then the histograms. Never raises."""
    names, (g, _, _) = _names(plan), _shape(plan)
    try:
        ints = np.zeros((g, len(names)), dtype=np.int64)
        rows = con.execute(plan.data["local"][0]["sql"]).fetchnumpy()
        index = np.asarray(rows["gi"], dtype=np.int64)
        for j, name in enumerate(names):
            ints[index, j] = np.rint(np.asarray(rows[name], dtype=np.float64)).astype(np.int64)
        hist = concordance.histograms(con.execute(plan.data["local"][1]["sql"]).fetchnumpy(), _shape(plan))
        return np.concatenate([hist[:1], encode_int(ints.ravel()), hist[1:]]).astype(np.uint64)
    except Exception:  # the engine or the data: every member fails alike, the site's log says nothing more
        failed = np.zeros(_size(plan), dtype=np.uint64)
        failed[0] = failure_word()
        return failed


# -- the committee's program ------------------------------------------------------------------
def validate_cox_program(p: Party, plan: Plan, site: SiteStep) -> Protocol[Outcome]:
    """The committee's protocol (module docstring, steps 2-4)."""
    names, (g, times, risks) = _names(plan), _shape(plan)
    k = int(plan.data["params"]["min_cell_size"])
    mine = yield from local(p, lambda: site(None))
    pooled = yield from site_sum(p, mine, _size(plan))
    if int((yield from ar.open_all(p, pooled[:1]))[0]) != 0:
        return empty_outcome(local_failed=True)
    at = 1 + g * len(names)
    ints = pooled[1:at].reshape(g, len(names))
    col = {name: ints[:, j] for j, name in enumerate(names)}
    dropped = col["n_where"] - col["n"]
    release = yield from release_groups(p, col, names[len(INTS) :], dropped, k)
    if release is None:
        return empty_outcome(refused="term_isolation", message=ModelRules(k).message("term_isolation"))
    released, small = release
    review = yield from group_bands(p, plan, col["n"])
    outputs: list[tuple[str, AShare]] = []
    if released:
        rel = np.asarray(released)
        hist = pooled[at:].reshape(2, g, times * risks)[:, rel]
        c_index = yield from concordance.concordance(p, hist.ravel(), (rel.size, times, risks))
        outputs += [(f"concordance.{part}", getattr(c_index, part)) for part in FLOAT_PARTS]
        outputs.append(("n", AShare.concat([col["n"][rel], col["pos"][rel]])))
        drop = [i for i in released if not small[i]]
        if drop:
            outputs.append(("dropped", dropped[np.asarray(drop)]))
    meta = {
        "plan": plan.data,
        "digest": plan.digest(),
        "released": released,
        "dropped": [i for i in released if not small[i]],
        "layout": [[name, int(x.size)] for name, x in outputs],
        **review,
    }
    if not outputs:
        return AShare(np.zeros((2, 0), dtype=np.uint64)), meta
    return AShare.concat([x.ravel() for _, x in outputs]), meta


# -- the analyst's side -----------------------------------------------------------------------
COLUMNS = ["n", "events", "concordance", "n_dropped"]


def assemble_validate_cox(meta: dict[str, Any], shares: list[AShare]) -> pd.DataFrame:
    """One row per group (``all`` without BY): n, events, concordance, n_dropped (NaN where
    withheld); ``released`` False for a group below the release rule."""
    plan, values = opened_outputs(meta, shares)
    m = plan.data["model"]
    index = pd.Index(["all"] if m["by"] is None else m["groups"], name=m["by"] or "group")
    frame = pd.DataFrame(np.nan, index=index, columns=COLUMNS)
    frame["released"] = False
    released = [int(i) for i in meta["released"]]
    if released:
        c_index, counts = opened_floats(values, "concordance"), decode_int(values["n"])
        at = frame.columns.get_loc
        for j, i in enumerate(released):
            frame.iloc[i, at("n")], frame.iloc[i, at("events")] = counts[j], counts[len(released) + j]
            frame.iloc[i, at("concordance")] = c_index[j]
            frame.iloc[i, at("released")] = True
        drop = [int(i) for i in meta["dropped"]]
        for j, i in enumerate(drop):
            frame.iloc[i, at("n_dropped")] = decode_int(values["dropped"])[j]
    lo, hi, step, _ = m["time_grid"]
    r_lo, r_step, risk_bins = m["risk_grid"]
    frame.attrs.update(
        {
            "model": KIND,
            "coefficients": {str(t): float(c) for t, c in m["coefficients"]},
            "time_grid": {"lo": lo, "hi": hi, "step": step},
            "risk_grid": {"lo": r_lo, "step": r_step, "bins": risk_bins},
            "plan_digest": meta["digest"],
            "reveals": [{"name": r["name"], "to": r["to"], "what": r["what"]} for r in plan.data["reveals"]],
        }
    )
    return frame


def explain_validate_cox(plan: Plan) -> str:
    """The plan in words: local SQL, the MPC steps, every reveal point."""
    d = plan.data
    m = d["model"]
    lo, hi, step, time_bins = m["time_grid"]
    r_lo, r_step, risk_bins = m["risk_grid"]
    lines = [f"Plan {plan.digest()[:16]} for:", *("    " + t for t in d["query"].strip().splitlines()), ""]
    lines.append(
        f"External validation of a Cox model (public coefficients) on {len(m['groups'])} group(s): Harrell's C "
        f"(lifelines' concordance_index) on the time grid [{lo:g}, {hi:g}] step {step:g} ({time_bins} bins) and "
        f"{risk_bins} risk bins of width {r_step:.4g} from {r_lo:.4g} (scores in one bin count as tied)."
    )
    lines.append(
        f"Release rule: a group needs at least {d['params']['min_cell_size']} persons, events and censored rows; "
        "every term of the score 0 and non-zero for 0 or at least k persons of a released group."
    )
    lines += ["", "1. Local step at every site, in the clear, on its own data:"]
    for q in d["local"]:
        lines.append(f"   [{q['name']}]: ({q['when']}) {q['sql']}")
    lines += [
        "",
        "2. Secret-shared to the committee (only the sum over sites): per group the counts, per group, time bin "
        "and risk bin the events and rows",
        "3. MPC steps: release bits; per released group suffix sums over time and prefix sums over risk (local), "
        "one inner product (concordant pairs, ties 1/2; comparable pairs), one division",
        "",
        "4. Reveal points:",
    ]
    for r in d["reveals"]:
        lines.append(f"   [{r['to']}] {r['name']}: {r['what']}")
    return "\n".join(lines)


MODELS[KIND] = ModelKind(
    compile_validate_cox, local_validate_cox, validate_cox_program, assemble_validate_cox, explain_validate_cox
)
