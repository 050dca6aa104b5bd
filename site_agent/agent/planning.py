"""The planner as the daemon and the analyst's client use it over the network.

``site_agent.query`` compiles text into a :class:`~site_agent.query.plan.Plan` and runs it in
one process. Over the network the same pieces are cut differently:

* every member compiles the envelope's text against the consortium schema file, the
  combined policy and the names of the committee members holding data, in committee order
  (the domain of ``SITE``; a neutral member without data is not a SITE), and the combined
  policy must allow the plan's statement kind (:func:`compile_query`);
* each site's pre-aggregates are flattened into one vector for ``input_all``
  (:meth:`Compiled.local_inputs`) and unflattened into the planner's per-input arrays, stacked
  on a site axis, inside the session (:meth:`Compiled.program`);
* after the plan's MPC program, the member's shares of every declared output are flattened
  into one array for the analyst, with the public metadata (plan, suppression flags, layout)
  in ``meta``; the analyst's :func:`assemble` rebuilds the planner's results from the three
  members' arrays and uses the planner's own assembly, so both paths build the same DataFrame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..config import ConsortiumConfig
from ..errors import ConfigError, QueryError, UnsupportedQuery
from ..linkage.cohort_statement import assemble as assemble_cohort
from ..linkage.cohort_statement import compile_cohort, is_cohort_query
from ..linkage.declaration import Linkage
from ..linkage.statement import KIND as LINKAGE
from ..linkage.statement import LinkageCompiled, compile_linkage, is_linkage_query
from ..linkage.statement import assemble as assemble_linkage
from ..models.statement import kind_of
from ..mpc.party import Party, Protocol
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..policy import Policy
from ..privacy.bands import BANDS_REVEAL, size_bands
from ..query import plan as query_plan
from ..query.catalog import Schema, rules_from_policy
from ..query.disclosure import EMPTY, RELEASED, SUPPRESSED
from ..query.dp import DP_PARAM, DpRequest, is_dp
from ..query.execute import assemble as assemble_results
from ..query.execute import failed_inputs, local_preaggregates
from ..query.explain import explain as explain_plan
from ..query.numeric import Float
from ..query.program import MpcResult, mpc_program
from ..query.schema_file import load_schema_file

SCHEMA_FILE = "schema.toml"
FLOAT_PARTS = ("sign", "mant", "exp")


def load_schema(consortium: ConsortiumConfig) -> Schema:
    """The consortium's common schema, ``schema.toml`` beside ``consortium.toml``."""
    path = consortium.path.parent / SCHEMA_FILE
    if not path.exists():
        raise ConfigError(f"{path}: the consortium's common schema file is missing")
    return load_schema_file(path)


@dataclass(frozen=True)
class RevealInfo:
    """A declared output as the audit log records it: name and shape, never values."""

    name: str
    shape: tuple[int, ...]


class ReviewTerms(NamedTuple):
    """Output review's terms, from the plan (so every member agrees): the sites whose DPO must
    approve every result (``review = "dpo"``), those who must approve a result where the release
    rule withheld a cell (``"failing"`` or ``"dpo"``), the hours they have, and the hours an
    approved result stays fetchable."""

    sites: list[str]
    withheld_sites: list[str]
    hours: int
    keep_hours: int

    def reviewers(self, meta: dict[str, Any]) -> list[str]:
        """The sites that must approve this computed result (none: it goes to the analyst).
        Decided from public facts only: whether the release rule withheld a cell."""
        return sorted(set(self.sites) | (set(self.withheld_sites) if "withheld" in meta else set()))


@dataclass(frozen=True)
class Compiled:
    """A compiled query at one member."""

    plan: query_plan.Plan

    @property
    def digest(self) -> str:
        return self.plan.digest()

    @property
    def input_names(self) -> list[str]:
        return [s["name"] for s in self.plan.data["inputs"]]

    def input_shape(self, name: str) -> tuple[int, ...]:
        return self.plan.input_shape(name)

    @property
    def input_size(self) -> int:
        return sum(int(np.prod(self.input_shape(n))) for n in self.input_names)

    @property
    def input_sizes(self) -> tuple[int, int, int]:
        n = self.input_size
        return (n, n, n)

    @property
    def reveals(self) -> list[RevealInfo]:
        return [RevealInfo(r["name"], (self.plan.out_cells,)) for r in self.plan.data["reveals"]]

    @property
    def kind(self) -> str:
        return self.plan.kind

    @property
    def dp(self) -> dict[str, Any] | None:
        """A DP plan's parameters (epsilon, delta, RDP curve, ...); None for an exact plan."""
        return dict(self.plan.data["params"]["dp"]) if is_dp(self.plan) else None

    @property
    def review(self) -> ReviewTerms | None:
        """The terms of output review, if the result is held (None: it goes to the analyst)."""
        review = self.plan.data.get("review")
        if review is None:
            return None
        return ReviewTerms(
            list(review["sites"]), list(review["withheld_sites"]), int(review["hours"]), int(review["keep_hours"])
        )

    def held_by(self, meta: dict[str, Any]) -> list[str]:
        """The sites that must approve this computed result before it leaves (none: it goes now)."""
        review = self.review
        return [] if review is None else review.reviewers(meta)

    def local_inputs(self, con: Any, site: str = "site", site_index: int | None = None, holds_data: bool = True) -> U64:
        """Run the local SQL on this site's data (``site`` names it in errors); one flat ring vector.

        ``site_index`` (the member's position among the committee members holding data) places a
        per-site breakdown's local cells in this site's own SITE slice; a member without data
        (``holds_data=False``) has none and inputs only fill values."""
        arrays = local_preaggregates(self.plan, con, site, site_index, holds_data)
        return np.concatenate([arrays[n].reshape(-1) for n in self.input_names]).astype(np.uint64)

    def failed_vector(self) -> U64:
        """What this site inputs when its local work failed: fill values and a secret failure word
        (site_agent/query/failsafe.py), so every member fails alike."""
        arrays = failed_inputs(self.plan)
        return np.concatenate([arrays[n].reshape(-1) for n in self.input_names]).astype(np.uint64)

    def ledger_shape(self, remembered: int) -> tuple[int, ...]:
        """Shape of a site's differences with ``remembered`` sets (none without a ledger query)."""
        if "ledger" not in self.plan.data or remembered == 0:
            return (0,)
        return (int(self.plan.data["ledger"]["sets"]), self.plan.out_cells, remembered)

    def opened(self, meta: dict[str, Any]) -> np.ndarray:
        """(query sets, out cells) booleans: the sets the released result opened (:func:`opened_sets`).
        A result held for review of withheld cells counts as opening every non-empty cell: decided
        from the release rule's public flags alone, never from what approval would leave."""
        if "withheld" in meta:
            return opened_sets(self.plan, [EMPTY if f == EMPTY else RELEASED for f in meta["withheld"]])
        return opened_sets(self.plan, meta["flags"])

    def program(self, p: Party, inputs: list[AShare], remembered: int = 0) -> Protocol[tuple[AShare, dict[str, Any]]]:
        """The plan's MPC program on the three sites' shared vectors; (shares out, public meta).

        Each vector ends with the site's differences with the ``remembered`` sets of its ledger."""
        stacked, at = self._stacked(inputs)
        ledger = self.ledger_shape(remembered)
        if ledger != (0,):
            stacked["ledger"] = AShare(np.stack([x.v[:, at:].reshape(2, *ledger) for x in inputs], axis=1))
        result = yield from mpc_program(p, self.plan, stacked)
        parts, layout = _flatten(result)
        meta = {"plan": self.plan.data, "digest": self.digest, "flags": result.flags.tolist(), "layout": layout}
        if result.withheld is not None:  # for the DPOs: what the release rule withheld
            meta["withheld"] = result.withheld.tolist()
        if result.local_failed:
            meta["local_failed"] = True  # the member raises LocalStepError once its session ended
        elif self.held_by(meta):  # the DPOs see each cell's size as a band, never the size
            meta["bands"] = yield from self.cell_bands(p, inputs)
        return parts, meta

    def _stacked(self, inputs: list[AShare]) -> tuple[dict[str, AShare], int]:
        """Each input's shares with a site axis, and where the inputs end in the vectors."""
        stacked: dict[str, AShare] = {}
        at = 0
        for name in self.input_names:
            shape = self.input_shape(name)
            size = int(np.prod(shape))
            stacked[name] = AShare(np.stack([x.v[:, at : at + size].reshape(2, *shape) for x in inputs], axis=1))
            at += size
        return stacked, at

    def cell_bands(self, p: Party, inputs: list[AShare]) -> Protocol[list[str]]:
        """Each base cell's pooled size as a band (``site_agent.privacy.bands``), for the
        reviewing DPOs: the persons of the cell's query set (rows where the table has no person
        column), compared with the bands' public bounds on shares; only the band is opened, to
        the committee (a reveal point the plan declares: ``explain``)."""
        name = next(s["cell"] for s in self.plan.data["steps"] if s["op"] == "suppress")
        stacked, _ = self._stacked(inputs)
        return (yield from size_bands(p, stacked[name].sum(axis=0)))  # the sites' counts added on shares

    def explain(self) -> str:
        return explain_plan(self.plan)


AnyCompiled = Compiled | LinkageCompiled
"""A compiled query: a planner's plan, or a record linkage statement (site_agent.linkage)."""


def compile_query(
    text: str,
    schema: Schema,
    policy: Policy,
    params: dict[str, Any] | None = None,
    sites: tuple[str, ...] | None = None,
    linkage: Linkage | None = None,
) -> AnyCompiled:
    """Compile ``text`` under the combined policy; raises QueryError or PolicyRefusal.

    ``sites`` are the names of the committee members that hold data, in committee order
    (:attr:`ConsortiumConfig.data_sites`, the domain of ``SITE``); the
    plan's statement kind (``aggregate`` or ``per_site_breakdown``) must be allowed by every site.
    ``COUNT(DISTINCT PERSON)`` compiles to a linkage statement over the declared ``linkage``.
    """
    rules = rules_from_policy(policy, schema)
    dp = dp_request((params or {}).get(DP_PARAM), policy)
    policy.check_mode(dp is not None)
    if is_cohort_query(text):
        if dp is not None:
            raise UnsupportedQuery("DP mode answers SELECT queries only; a LINK statement is answered exactly")
        policy.check_reviewable(
            "a LINK statement runs the record-linkage flow, whose result is not held for output review"
        )
        return compile_cohort(text, linkage, rules, len(sites) if sites is not None else 3, schema)
    if is_linkage_query(text, schema):
        if dp is not None:
            raise UnsupportedQuery("DP mode answers SELECT queries only; COUNT(DISTINCT PERSON) is answered exactly")
        policy.check_reviewable(
            "COUNT(DISTINCT PERSON) runs the record-linkage flow, whose result is not held for output review"
        )
        return compile_linkage(text, linkage, rules, len(sites) if sites is not None else 3, schema)
    from .models import ModelCompiled  # a model statement's plan (site_agent.models)

    plan = query_plan.compile_query(text, schema, rules, sites, dp, params)
    compiled = ModelCompiled(plan) if "model" in plan.data else Compiled(plan)
    policy.check_kind(compiled.kind)
    # Output review holds exact results as shares (docs/review-and-report.md). DP results cannot
    # be held (they are noised and budgeted: a DPO's deny would waste the spent budget, and a
    # held noisy result would be a second release rule); linkage is a separate flow (above).
    if dp is not None:
        policy.check_reviewable(
            "DP results are noised and spent from the privacy budget when computed, so they are not held for "
            "output review; ask without @dp for an exact result the DPO reviews"
        )
    else:
        _hold_for_review(compiled, policy)
    return compiled


def _hold_for_review(compiled: Compiled, policy: Policy) -> None:
    """Write output review's terms into an exact plan, so its digest holds them and members
    agree before any share moves. An aggregate waits for the ``"dpo"`` sites, and where the
    release rule withheld a cell for the ``"failing"`` ones too (the ``review_flags`` step). A
    model or a KAPLAN_MEIER waits for the ``"dpo"`` sites only: its rules refuse rather than
    withhold (a survival curve's withheld steps are never released), so a ``"failing"`` site has
    nothing to review there. A held model opens its sizes as bands (a declared reveal point)."""
    aggregate = "model" not in compiled.plan.data and "statement" not in compiled.plan.data
    sites, withheld = policy.review_sites(), policy.review_withheld_sites()
    if not (withheld if aggregate else sites):
        return
    data = compiled.plan.data
    data["review"] = {
        "sites": list(sites),
        "withheld_sites": list(withheld) if aggregate else [],
        "hours": policy.review_deadline_hours(),
        "keep_hours": policy.review_keep_hours,
    }
    if aggregate:
        at = next(i for i, s in enumerate(data["steps"]) if s["op"] == "reveal_flags")
        data["steps"].insert(at + 1, {"op": "review_flags"})
    if "model" in data:
        data["reveals"] = [*data["reveals"], dict(BANDS_REVEAL)]


def dp_request(raw: Any, policy: Policy) -> DpRequest | None:
    """The DP mode the envelope asks for (its ``@dp`` parameter, untrusted input), under the
    combined policy: epsilon at most every site's ``epsilon_per_query`` (default: that cap), the
    policy's delta and rows per person. None for an exact query."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"epsilon"}:
        raise QueryError(f"the {DP_PARAM} parameter must be {{'epsilon': number or null}}")
    eps = raw.get("epsilon")
    if eps is None:
        eps = policy.privacy.epsilon_per_query
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise QueryError(f"epsilon must be a positive number, not {eps!r}")
    policy.check_epsilon(float(eps))
    p = policy.privacy
    return DpRequest(float(eps), p.delta, p.max_rows_per_person)


def _flatten(result: MpcResult) -> tuple[AShare, list[list[Any]]]:
    """One member's output shares as one array, and the layout to cut it back."""
    pieces: list[np.ndarray] = []
    layout: list[list[Any]] = []
    for name, value in result.opened.items():
        if isinstance(value, Float):
            for part in FLOAT_PARTS:
                pieces.append(getattr(value, part).v.reshape(2, -1))
            layout.append([name, "float", int(value.sign.size)])
        else:
            pieces.append(value.v.reshape(2, -1))
            layout.append([name, "fixed", int(value.size)])
    flat = np.concatenate(pieces, axis=1) if pieces else np.zeros((2, 0), dtype=np.uint64)
    return AShare(flat), layout


def _unflatten(flat: AShare, flags: U64, layout: list[list[Any]]) -> MpcResult:
    opened: dict[str, AShare | Float] = {}
    at = 0
    for name, kind, size in layout:
        if kind == "float":
            parts = [flat[at + k * size : at + (k + 1) * size] for k in range(len(FLOAT_PARTS))]
            opened[name] = Float(*parts)
            at += size * len(FLOAT_PARTS)
        else:
            opened[name] = flat[at : at + size]
            at += size
    return MpcResult(flags, opened)


def assemble(meta: dict[str, Any], member_shares: list[AShare]) -> pd.DataFrame:
    """The analyst's side: the three members' output arrays and the public metadata to a DataFrame."""
    if meta.get("kind") == LINKAGE:
        return (assemble_cohort if meta["plan"].get("link") else assemble_linkage)(meta, member_shares)
    plan = query_plan.Plan(meta["plan"])
    model = kind_of(plan)
    if model is not None:
        return model.assemble(meta, member_shares)
    if plan.digest() != meta["digest"]:
        raise ConfigError("the result's plan does not match its digest")
    flags = np.asarray(meta["flags"], dtype=np.uint64)
    results = [_unflatten(s.ravel(), flags, meta["layout"]) for s in member_shares]
    frame = assemble_results(plan, results)
    frame.attrs["plan_digest"] = meta["digest"]
    frame.attrs["reveals"] = [{"name": r["name"], "what": r["what"]} for r in plan.data["reveals"]]
    return frame


def opened_sets(plan: query_plan.Plan, flags: list[int]) -> np.ndarray:
    """(query sets, out cells) booleans: the query set was opened in the cell (some release row
    that uses it was not suppressed there), so the ledger remembers it."""
    rows = next(s for s in plan.data["steps"] if s["op"] == "suppress")["rows"]
    released = np.asarray(flags, dtype=np.uint64).reshape(len(rows), -1) == RELEASED
    opened = np.zeros((int(plan.data["ledger"]["sets"]), released.shape[1]), dtype=bool)
    for r, row in enumerate(rows):
        opened[row["sets"]] |= released[r]
    return opened


def stats_of(meta: dict[str, Any]) -> dict[str, Any]:
    """Public numbers about a result for the receipt line (cells, suppressed cells)."""
    flags = meta.get("flags", [])
    return {"cells": len(flags), "suppressed": int(sum(1 for f in flags if f == SUPPRESSED))}
