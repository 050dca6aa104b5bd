"""GRADIENT LOGISTIC: one pooled score (and Hessian) at the analyst's public coefficients.

Statement (docs/models.md, "Gradients for your own optimiser")::

    GRADIENT LOGISTIC y ~ terms FROM t [WHERE ...] AT (b0, b1, ...) [WITH HESSIAN]

for analysts who run their own optimiser (a penalised fit, a custom stopping rule, a
meta-analysis): the score X'(y - p) and, with ``WITH HESSIAN``, the Hessian of the
log-likelihood -X'WX at beta = (b0, b1, ...), in the order of the design's columns (the
intercept first, as LOGISTIC names them), equal to statsmodels' ``Logit(y, X).score(beta)`` and
``.hessian(beta)`` on the pooled rows.

It is the first Newton step of :mod:`.glm` at the analyst's beta, with no Newton loop: the same
statement parsing, design, local step (:func:`site_agent.models.glm.local_glm`) and model
rules. Then the pooled score and Hessian are released at 24 and 20 fractional bits.

Disclosure: a gradient at analyst-chosen coefficients is a disclosure risk a fitted model is
not. With a huge coefficient on a term, p is 0 or 1 at every row on either side of a
hyperplane the analyst chose, so the score at such beta minus the score at beta = 0 is a sum
over the rows beyond the hyperplane: a query set the analyst draws with the coefficients, which
can hold one patient. So besides the model rules of LOGISTIC (at least k persons in the rows
and in every level of a categorical term, residual df, events per term), checked on shares:

* ``gradient_eta_bound``: every row's linear predictor at beta lies within
  +-:data:`~site_agent.privacy.models.GRADIENT_ETA_BOUND`
  (p between 0.0025 and 0.9975), so no row's p is pushed to 0 or 1 and each row's share of
  every score entry stays a bounded, smooth function of beta;
* ``term_isolation``: for every non-intercept column of the design, the persons whose value
  is 0 and those whose value is not 0 each number 0 or at least k (``I(age > 80)`` held by
  two patients is refused: its score entry would be their residuals).

Each row contributes (y - p) x_j to the score and p (1 - p) x_i x_j to the Hessian: bounded by
|x| and x^2, themselves bounded by the schema's column bounds, so one person moves a released
entry by a bounded amount; the rules above keep the analyst from making a query set of 1..k-1
persons out of the rows. Docs/models.md states what remains possible (systems of gradients).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from ..errors import QuerySyntaxError, UnsupportedQuery
from ..mpc import arithmetic as ar
from ..mpc.fixed import encode_int
from ..mpc.party import Party, Protocol, local
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..privacy.models import GRADIENT_ETA_BOUND, Check, model_checks, small_counts
from ..query.catalog import DisclosureRules, Schema
from ..query.failsafe import failure_word
from ..query.plan import Plan
from . import glm
from .statement import (
    MODELS,
    ModelKind,
    Outcome,
    SiteStep,
    Statement,
    empty_outcome,
    opened_outputs,
    pool_sites,
    site_shares,
    with_ledger,
)

_AT = re.compile(r"\s+AT\s*\(([^()]*)\)\s*(WITH\s+HESSIAN)?\s*;?\s*$", re.IGNORECASE)


def compile_gradient(
    statement: Statement, schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None
) -> Plan:
    """The plan of ``GRADIENT LOGISTIC ...`` (see the module docstring)."""
    head = re.match(r"\s*LOGISTIC\b(.*)$", statement.body, re.IGNORECASE | re.DOTALL)
    if head is None:
        raise UnsupportedQuery("GRADIENT takes a LOGISTIC model: GRADIENT LOGISTIC y ~ x FROM t AT (b0, b1)")
    found = _AT.search(statement.tail)
    if found is None:
        raise QuerySyntaxError("GRADIENT needs AT (b0, b1, ...) at the end: one coefficient per parameter")
    try:
        at = [float(v) for v in found.group(1).split(",")]
    except ValueError:
        raise QuerySyntaxError("AT takes numbers: AT (b0, b1, ...)") from None
    if not all(np.isfinite(at)):
        raise QuerySyntaxError("AT takes finite numbers")
    inner = Statement(statement.text, "LOGISTIC", head.group(1).strip(), statement.tail[: found.start()])
    query, d, response, _, _ = glm.glm_design(inner, schema, rules, sites)
    if len(at) != len(d.columns):
        raise UnsupportedQuery(f"AT gives {len(at)} coefficients; the model has {len(d.columns)}: {', '.join(d.names)}")
    plan = glm.plan_glm(inner, query, d, response, inner.body.split("~")[0].strip(), None, None, rules)
    data = plan.data
    data["model"].update(kind="GRADIENT", at=at, hessian=bool(found.group(2)), eta_bound=GRADIENT_ETA_BOUND)
    data["local"].append({"name": "support", "sql": _support_sql(data), "when": "once, eta at AT"})
    data["reveals"] = _reveals(data["reveals"], bool(found.group(2)))
    # The query set is the rows the gradient sums (its complete cases), as a fit's
    return with_ledger(Plan(data), query, [glm.complete_cases("binomial", d, response, None)])


def _support_sql(data: dict[str, Any]) -> str:
    """Per non-intercept design column, persons (rows without a person column) whose value is
    not 0 and is 0, and the rows whose linear predictor at AT lies beyond the bound: over the
    complete cases the Newton-step SQL reads (its innermost ``_eta`` rows)."""
    rows = glm.eta_rows_sql(data["local"][1]["sql"], data["model"]["at"])
    k = len(data["model"]["names"])
    items = []
    for j in range(1, k):
        items += [f"COUNT(CASE WHEN z{j} <> 0 THEN 1 END) AS nz{j}", f"COUNT(CASE WHEN z{j} = 0 THEN 1 END) AS z{j}"]
    items.append(f"COUNT(CASE WHEN ABS(eta) > {data['model']['eta_bound']!r} THEN 1 END) AS far")
    return f"SELECT {', '.join(items)} FROM {rows}"


def _reveals(glm_reveals: list[dict[str, Any]], hessian: bool) -> list[dict[str, Any]]:
    keep = {"local_failed", "rules", "dropped_small", "n", "dropped"}
    out = [r for r in glm_reveals if r["name"] in keep]
    out.insert(2, {"name": "gradient_rules", "to": "committee", "what": "one bit per gradient rule"})
    out.append({"name": "score", "to": "analyst", "what": "X'(y - p) at AT (24 fractional bits)"})
    if hessian:
        out.append({"name": "hessian", "to": "analyst", "what": "-X'WX at AT (20 fractional bits)"})
    return out


def _support_size(plan: Plan) -> int:
    return 2 * (len(plan.data["model"]["names"]) - 1) + 2


def local_gradient(plan: Plan, con: Any, holds_data: bool, params: dict[str, Any] | None) -> U64:
    """A site's vector: the GLM's first local step (counts and terms at 0, for the rules), its
    support counts, and the Newton terms at AT. Never raises."""
    m = plan.data["model"]
    first = glm.local_glm(plan, con, holds_data, None)
    at = glm.local_glm(plan, con, holds_data, {"beta": m["at"]})
    try:
        row = con.execute(plan.data["local"][2]["sql"]).fetchone()
        support = encode_int([0, *(int(v) for v in row)])
    except Exception:  # the engine or the data: every member fails alike
        support = np.zeros(_support_size(plan), dtype=np.uint64)
        support[0] = failure_word()
    return np.concatenate([first, support, at]).astype(np.uint64)


def gradient_program(p: Party, plan: Plan, site: SiteStep) -> Protocol[Outcome]:
    """Pool, check the model and gradient rules, release the score (and Hessian) at AT."""
    m = plan.data["model"]
    k, k_rule = len(m["names"]), int(plan.data["params"]["min_cell_size"])
    n_counts, n_step = glm.vector_sizes(plan)
    n_support = _support_size(plan)
    size = n_counts + n_step + n_support + n_step
    mine = yield from local(p, lambda: site(None))
    shared = yield from site_shares(p, mine, size)
    pooled = pool_sites(shared)
    counts = pooled[:n_counts]
    support = pooled[n_counts + n_step : n_counts + n_step + n_support]
    failed, h, g, _ = glm.split_terms(pooled[n_counts + n_step + n_support :], k)
    words = AShare.concat([pooled[n_counts : n_counts + 1], support[:1], failed])
    opened = yield from ar.open_all(p, words.sum().reshape(1))
    if int(opened[0]) != 0:
        return empty_outcome(local_failed=True)
    refused, dropped, withheld = yield from glm.check_rules(p, plan, counts)
    if refused is None:
        one = ar.constant(p, np.ones(1, dtype=np.uint64), AShare)
        bad = yield from model_checks(p, [Check("gradient_eta_bound", one - support[-1:], 1)])
        small = yield from small_counts(p, support[1:-1], k_rule)
        refused = "gradient_eta_bound" if bad[0] else "term_isolation" if any(small) else None
    if refused is not None:
        return empty_outcome(refused=refused, message=glm.rule_set(plan).message(refused))
    review = yield from glm.review_bands(p, plan, counts)
    low = yield from ar.trunc(p, AShare.concat([g[1], h[1].ravel()]), glm.HL)
    outputs = [("score", g[0] + low[:k]), ("n", counts[1:2])]
    if m["hessian"]:
        iu = np.triu_indices(k)
        outputs.append(("hessian", (h[0] + low[k:].reshape(k, k))[iu[0], iu[1]]))
    if not withheld:
        outputs.append(("dropped", dropped))
    meta = {"plan": plan.data, "digest": plan.digest(), "layout": [[n, int(x.size)] for n, x in outputs], **review}
    return AShare.concat([x.ravel() for _, x in outputs]), meta


def assemble_gradient(meta: dict[str, Any], shares: list[AShare]) -> pd.DataFrame:
    """One row per parameter: ``score``, and with WITH HESSIAN one column per parameter (the
    Hessian of the log-likelihood, symmetric)."""
    plan, opened = opened_outputs(meta, shares)
    m = plan.data["model"]
    values = {name: words.view(np.int64) for name, words in opened.items()}
    names = list(m["names"])
    frame = pd.DataFrame({"at": m["at"], "score": values["score"] / 2.0**glm.FG}, index=pd.Index(names))
    if "hessian" in values:
        k = len(names)
        full = np.zeros((k, k))
        full[np.triu_indices(k)] = values["hessian"] / 2.0**glm.FH
        full = full + np.triu(full, 1).T
        for j, name in enumerate(names):
            frame[name] = -full[:, j]
    frame.attrs.update(
        {
            "model": "GRADIENT",
            "n": int(values["n"][0]),
            "n_dropped": int(values["dropped"][0]) if "dropped" in values else None,
            "plan_digest": meta["digest"],
            "reveals": [{"name": r["name"], "to": r["to"], "what": r["what"]} for r in plan.data["reveals"]],
        }
    )
    return frame


def explain_gradient(plan: Plan) -> str:
    """The plan in words."""
    d = plan.data
    m = d["model"]
    lines = [f"Plan {plan.digest()[:16]} for:", *("    " + t for t in d["query"].strip().splitlines()), ""]
    lines.append(
        f"Score{' and Hessian' if m['hessian'] else ''} of a logistic log-likelihood at public coefficients "
        f"({', '.join(f'{n} = {b:g}' for n, b in zip(m['names'], m['at'], strict=True))})."
    )
    lines.append(
        f"Rules: the LOGISTIC model rules (k = {d['params']['min_cell_size']}); |eta| <= {m['eta_bound']:g} at every "
        "row; every term 0 and not 0 at 0 or >= k persons."
    )
    lines += ["", "1. Local step at every site, in the clear, on its own data:"]
    for q in d["local"]:
        lines.append(f"   [{q['name']}]: ({q['when']}) {q['sql']}")
    lines += ["", "2. Reveal points:"]
    for r in d["reveals"]:
        lines.append(f"   [{r['to']}] {r['name']}: {r['what']}")
    return "\n".join(lines)


MODELS["GRADIENT"] = ModelKind(compile_gradient, local_gradient, gradient_program, assemble_gradient, explain_gradient)
