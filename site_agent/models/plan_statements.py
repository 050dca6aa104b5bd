"""Model statements planned as an aggregate query plus their own MPC steps, keyed by keyword.

Such a statement (``KAPLAN_MEIER ...``) is not a ``SELECT``, yet everything it shares is known
before the session starts (counts per group and time bin), so its planner returns an ordinary
:class:`~site_agent.query.plan.Plan`: the plan of the aggregate query that selects its groups
(local SQL, inputs, the release rule and the analyst's release ledger, reveal points), with
further local SQL, MPC step operations and reveal points of its own, marked by
``data["statement"]``. The plan interpreter (:func:`site_agent.query.program.mpc_program`) runs
those steps beside the aggregate ones, the analyst's assembly is the statement's own, and the
agent treats the plan like any aggregate plan (its inputs shared up front, its ledger query
run). The query layer looks a statement up here (:func:`find_statement` by text,
:func:`plan_statement` by plan) and knows nothing else of it.

Iterative models whose local step needs public parameters known only inside the session
(Newton's coefficient iterates) need another shape and are not registered here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ..mpc.party import Protocol
    from ..query.catalog import DisclosureRules, Schema
    from ..query.plan import Plan
    from ..query.program import MpcResult, Run

StepHandler = Callable[["Run", dict[str, Any]], "Protocol[None]"]


@dataclass(frozen=True)
class Statement:
    """One model statement: its keyword, planner, MPC steps and assembly."""

    keyword: str
    compile: Callable[[str, Schema, DisclosureRules, tuple[str, ...] | None], Plan]
    steps: Mapping[str, StepHandler]
    assemble: Callable[[Plan, list[MpcResult]], pd.DataFrame]
    step_words: Mapping[str, str]
    """What each step does, in the words of ``--explain``."""
    describe: Callable[[Plan], list[str]]
    """Lines ``--explain`` prints about the statement after the plan's cells (its method, its
    grid, its release rule)."""


_FIRST_WORD = re.compile(r"\A\s*([A-Za-z_]+)")


def statements() -> dict[str, Statement]:
    """Every model statement by keyword (upper case)."""
    from . import kaplan_meier

    return {s.keyword: s for s in (kaplan_meier.STATEMENT,)}


def find_statement(text: str) -> Statement | None:
    """The model statement ``text`` starts with, or None (then it is a ``SELECT``)."""
    m = _FIRST_WORD.match(text)
    return statements().get(m.group(1).upper()) if m else None


def plan_statement(plan: Plan) -> Statement | None:
    """The model statement a plan was compiled from, or None for an aggregate query."""
    name = plan.data.get("statement")
    return None if name is None else statements()[str(name)]
