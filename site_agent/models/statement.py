"""Model statements: recognise ``KIND ... FROM ...`` and hand it to the model's planner.

The query planner (:func:`site_agent.query.plan.compile_query`) asks :func:`compile_statement`
first; text that starts with a registered keyword is a model statement, anything else an
ordinary aggregate query. A model kind is one entry of :data:`MODELS` (see
:class:`ModelKind`): how to compile the statement into a plan, what a site computes locally,
the committee's MPC program and the analyst's assembly. Adding ``KAPLAN_MEIER`` or ``COX`` is
one more entry.

The plan of a model is a :class:`~site_agent.query.plan.Plan` whose JSON holds ``model`` (with
its ``kind``), so every member digests, compares and explains it like any plan. Where the
statement reads its rows (``FROM ... [WHERE ...]``) is validated by the ordinary query
validator (:func:`validate_source`): tables, exposed columns, identifiers and the WHERE
condition obey the same policy rules as any query. Its persons (the FROM/WHERE rows' person
column; for LINEAR, LOGISTIC, POISSON and COX those of the rows the fit uses) form one query set
for the analyst's release ledger (``data["ledger"]``; VALIDATE with BY: one set per group, COX
with STRATA: one more per stratum, :mod:`site_agent.privacy.ledger`): the agent compares it
with the sets released before and refuses the model (rule ``ledger_difference``) when a
difference holds 1 to k-1 persons, and remembers it once the model is released
(:mod:`site_agent.agent.models`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlglot.expressions as exp

from ..errors import EncodingError, LocalStepError, ModelRefused, QueryError, QuerySyntaxError, UnsupportedQuery
from ..mpc import arithmetic as ar
from ..mpc.party import Party, Protocol, run_in_memory
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..mpc.sharing import reconstruct
from ..query.catalog import DisclosureRules, Schema
from ..query.numeric import decode_float
from ..query.parse import Query, parse_query
from ..query.plan import Plan, whole_set_ledger

SiteStep = Callable[[dict[str, Any] | None], U64]
"""A site's local computation: its public parameters (None: the first step) to its vector. At a
member of a consortium with input-only sites, the vector is followed by this member's share pairs
of each input site's vector at the same parameters (:func:`site_shares` splits them)."""


def site_shares(p: Party, mine: U64, size: int) -> Protocol[list[AShare]]:
    """Every data site's ``size``-word vector as shares, in site order: the three members' own
    (``mine[:size]``, shared by :func:`site_agent.mpc.arithmetic.input_all` in one round), then
    the input-only sites' pairs this member's local step fetched (``mine[size:]``: two components
    of ``size`` words per input site, dealt by that site; site_agent/agent/inputs.py)."""
    own, fetched = _split(mine, size)
    members = yield from ar.input_all(p, own, (size,) * 3)
    return members + fetched


def site_sum(p: Party, mine: U64, size: int) -> Protocol[AShare]:
    """The sum of every data site's ``size``-word vector, shared, when only the sum is needed:
    the members' by :func:`site_agent.mpc.arithmetic.input_sum` (half of ``input_all``'s bytes),
    plus the input-only sites' pairs fetched by the local step (as in :func:`site_shares`)."""
    own, fetched = _split(mine, size)
    members = yield from ar.input_sum(p, own)
    return pool_sites([members, *fetched])


def _split(mine: U64, size: int) -> tuple[U64, list[AShare]]:
    """A local step's result: this member's own vector, and its pairs of the input sites' ones."""
    fetched = np.asarray(mine, dtype=np.uint64)[size:]
    if mine.size < size or (fetched.size % (2 * size) if size else fetched.size):
        raise EncodingError(f"a local step returned {mine.size} words for vectors of {size}")
    return np.asarray(mine, dtype=np.uint64)[:size], [AShare(pair) for pair in fetched.reshape(-1, 2, size)]


def pool_sites(shares: Sequence[AShare]) -> AShare:
    """The sites' shared vectors added (local, no communication)."""
    return AShare(np.sum([x.v for x in shares], axis=0, dtype=np.uint64))


Outcome = tuple[AShare, dict[str, Any]]
"""What a member ends a model's program with: its shares of the outputs and public metadata.
``meta["refused"]`` (a rule) or ``meta["local_failed"]`` mean nothing was revealed."""


@dataclass(frozen=True)
class Statement:
    """A model statement cut at its top-level FROM: ``keyword body FROM tail``; ``params``: the
    signed envelope's named parameters (public, part of the plan where a statement reads one:
    ``TREES(:model)``, site_agent/models/trees.py)."""

    text: str
    keyword: str
    body: str
    tail: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelKind:
    """What one model kind provides (each a pure function; no I/O but the site's connection).

    * ``compile(statement, schema, rules, sites)``: the plan, or a QueryError/PolicyRefusal;
    * ``local(plan, con, holds_data, params)``: a site's flat ring vector at public
      ``params`` (never raises: a failing step gives the failure vector);
    * ``program(p, plan, site)``: the committee's protocol; ``site`` runs this member's local
      step (called through :func:`site_agent.mpc.party.local`);
    * ``assemble(meta, shares)``: the analyst's DataFrame from the three members' outputs;
    * ``explain(plan)``: the plan in words for ``--explain``.
    """

    compile: Callable[[Statement, Schema, DisclosureRules, tuple[str, ...] | None], Plan]
    local: Callable[[Plan, Any, bool, dict[str, Any] | None], U64]
    program: Callable[[Party, Plan, SiteStep], Protocol[Outcome]]
    assemble: Callable[[dict[str, Any], list[AShare]], pd.DataFrame]
    explain: Callable[[Plan], str]


MODELS: dict[str, ModelKind] = {}
"""The registered model kinds by keyword (upper case); filled by the modules defining them."""

_FROM = re.compile(r"\bFROM\b", re.IGNORECASE)


def _registered() -> Mapping[str, ModelKind]:
    from . import cox, glm, gradient, validate, validate_cox  # noqa: F401  (COX; LINEAR, LOGISTIC, POISSON; GRADIENT; VALIDATE)

    return MODELS


def split_statement(text: str, params: Mapping[str, Any] | None = None) -> Statement | None:
    """The statement if ``text`` starts with a registered keyword, else None."""
    head = re.match(r"\s*([A-Za-z_]+)\b", text)
    if head is None or head.group(1).upper() not in _registered():
        return None
    keyword = head.group(1).upper()
    rest = text[head.end() :]
    found = _FROM.search(rest)
    if found is None:
        raise QuerySyntaxError(f"{keyword}: the statement needs FROM <table>")
    return Statement(text, keyword, rest[: found.start()].strip(), rest[found.end() :].strip(), dict(params or {}))


def compile_statement(
    text: str,
    schema: Schema,
    rules: DisclosureRules,
    sites: tuple[str, ...] | None,
    params: Mapping[str, Any] | None = None,
) -> Plan | None:
    """The plan of a model statement, or None when ``text`` is not one; ``params`` are the
    envelope's named parameters (a statement reads those it names)."""
    statement = split_statement(text, params)
    if statement is None:
        return None
    return MODELS[statement.keyword].compile(statement, schema, rules, sites)


def with_ledger(plan: Plan, query: Query, groups: Sequence[exp.Expr] = ()) -> Plan:
    """The plan with its release-ledger query and its reveal: one query set, the persons of the
    validated source ``query`` (FROM/WHERE), or with ``groups`` one set per group (the WHERE
    persons meeting its condition: VALIDATE's BY groups, each released on its own; a fit's
    complete cases and COX's strata, so that two fits whose rows differ by one person through
    NULLs in a model column are compared like two WHERE sets). Unchanged
    when the FROM table declares no person column (then nothing is compared or remembered, as
    for an aggregate over it)."""
    ledger = whole_set_ledger(query, groups)
    if ledger is None:
        return plan
    reveal = {
        "name": "ledger",
        "to": "committee",
        "what": "how many sites' ledger queries failed (0 normally), and whether the model's persons differ from a set "
        "released to the analyst before by 1 to k-1 persons (then nothing else is computed)",
    }
    return Plan({**plan.data, "ledger": ledger, "reveals": [reveal, *plan.data["reveals"]]})


def kind_of(plan: Plan) -> ModelKind | None:
    """The model kind of a plan (None for an ordinary query's plan)."""
    model = plan.data.get("model")
    return None if model is None else _registered()[model["kind"]]


def require_model_kind(rules: DisclosureRules) -> None:
    """Refuse a model statement when some site's policy does not allow the kind ``model``."""
    if rules.statement_kinds is not None and "model" not in rules.statement_kinds:
        allowed = ", ".join(sorted(rules.statement_kinds)) or "none"
        raise rules.refusal(
            "statement_kinds", f"'model' statements are not allowed (allowed: {allowed})", "check_kind", "model"
        )


def validate_source(
    tail: str, expressions: list[str], schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None
) -> tuple[Query, list[exp.Expression]]:
    """Validate ``FROM tail`` and the model's column ``expressions`` as the query validator does
    (tables, exposed columns, identifiers, WHERE), by compiling ``SELECT COUNT(e1), ... FROM
    tail``. Returns the validated query (source, WHERE, person column) and each expression
    resolved (qualified by table alias), in order."""
    select = ", ".join(f"COUNT({e})" for e in expressions)
    try:
        query = parse_query(f"SELECT {select} FROM {tail}", schema, rules, sites)
    except QueryError as err:  # its position is in the generated SELECT: keep the reason only
        err.line = err.column = None
        err.text = ""
        err.args = (err.message,)
        raise
    if query.keys or query.post.active:
        raise UnsupportedQuery("a model statement takes FROM and WHERE only (no GROUP BY, HAVING, ORDER BY, LIMIT)")
    return query, [a.args[0] for a in query.aggregates]


def execute(plan: Plan, connections: Mapping[str, Any], without_data: tuple[str, ...] = ()) -> pd.DataFrame:
    """Run a model's plan over three sites' connections in this process (tests, demos,
    benchmarks): each member is one site; its local steps run directly."""
    kind = kind_of(plan)
    if kind is None:
        raise ValueError("not a model plan")
    if len(connections) != 3:
        raise ValueError("a model runs on the three committee sites")
    steps = [
        (lambda params, con=con, held=name not in without_data: kind.local(plan, con, held, params))
        for name, con in connections.items()
    ]
    results, stats = run_in_memory(lambda p: kind.program(p, plan, steps[p.index]), seed=os.urandom(16))
    raise_outcome(results[0][1])
    frame = kind.assemble(results[0][1], [r[0] for r in results])
    frame.attrs["rounds"] = max(s.rounds for s in stats)
    frame.attrs["bytes"] = sum(s.bytes_sent for s in stats)
    return frame


def raise_outcome(meta: dict[str, Any]) -> None:
    """After the session: a failed local step or a refusal by a disclosure rule, at every member
    alike (the rule is named; no site, since the decision was taken on pooled shares)."""
    if meta.get("local_failed"):
        raise LocalStepError()
    if meta.get("refused"):
        raise ModelRefused(str(meta["refused"]), str(meta["message"]))


FLOAT_PARTS = ("sign", "mant", "exp")
"""The three words of an opened floating-point output (:class:`site_agent.query.numeric.Float`)."""


def opened_outputs(meta: dict[str, Any], shares: list[AShare]) -> tuple[Plan, dict[str, U64]]:
    """The analyst's side of a model's result: the plan it was computed under (checked against
    the digest the members sent) and each declared output's opened ring words, cut by
    ``meta["layout"]`` (name and size, in the order the members flattened their shares)."""
    plan = Plan(meta["plan"])
    if plan.digest() != meta["digest"]:
        raise EncodingError("the result's plan does not match its digest")
    values: dict[str, U64] = {}
    at = 0
    flat = [s.ravel() for s in shares]
    for name, size in meta["layout"]:
        values[name] = reconstruct([f[at : at + size] for f in flat])
        at += size
    return plan, values


def opened_floats(values: Mapping[str, U64], name: str) -> np.ndarray:
    """The floating-point output ``name`` of :func:`opened_outputs`' values, decoded."""
    return decode_float(*(values[f"{name}.{part}"] for part in FLOAT_PARTS))


def empty_outcome(**meta: Any) -> Outcome:
    """Nothing to reveal, with the reason in ``meta``."""
    return AShare(np.zeros((2, 0), dtype=np.uint64)), meta
