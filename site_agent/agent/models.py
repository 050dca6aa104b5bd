"""A compiled model statement at one member: the daemon's view of a model's plan.

Same interface as :class:`~site_agent.agent.planning.Compiled`, cut for models
(:mod:`site_agent.models.statement`): a model's local steps run inside its MPC session, at
public parameters only the session knows (a coefficient iterate), so :meth:`local_inputs`
shares nothing of the model up front; it binds this site's connection, and the program's
:class:`~site_agent.mpc.party.LocalStep` requests run the model's local step on it (in a
worker thread, by the network adapter). Its vectors are shared inside the program.

The release ledger (:mod:`site_agent.privacy.ledger`): a model whose table names its person
column has one query set (``data["ledger"]``): the persons of its FROM/WHERE rows, for LINEAR,
LOGISTIC, POISSON and COX only those of the rows the fit uses (its complete cases); COX with
STRATA has one more per stratum, VALIDATE with BY one per group. Up front each site
shares a failure word of its ledger query (0, or 1 when it failed) and its differences with
the analyst's remembered sets; before any model step the committee opens whether some site
failed (then every member fails, :class:`~site_agent.errors.LocalStepError`) and whether
some pooled difference holds 1 to k-1 persons (:func:`~site_agent.privacy.checks.ledger_stops`;
then every member refuses with the rule ``ledger_difference``; with BY, when one group's set
does). After a released fit the agent remembers its sets (:meth:`ModelCompiled.opened`; for
VALIDATE only the groups it released), as it does an aggregate's cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..models.statement import ModelKind, empty_outcome, kind_of, pool_sites
from ..mpc import arithmetic as ar
from ..mpc.party import Party, Protocol
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..privacy.checks import ledger_stops
from ..query.explain import review_lines
from .planning import Compiled, RevealInfo

LEDGER_RULE = "ledger_difference"


@dataclass(frozen=True)
class ModelCompiled(Compiled):
    """A model's plan; ``site`` holds the connection bound by :meth:`local_inputs` and, at a
    member of a consortium with input-only sites, ``remote``: their share pairs at a step's
    parameters (site_agent/agent/inputs.py), appended to this member's own vector."""

    site: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def model(self) -> ModelKind:
        kind = kind_of(self.plan)
        assert kind is not None
        return kind

    @property
    def kind(self) -> str:
        return "model"

    @property
    def input_names(self) -> list[str]:
        return []

    @property
    def input_size(self) -> int:
        """The ledger query's failure word (none without a ledger query)."""
        return 1 if "ledger" in self.plan.data else 0

    @property
    def reveals(self) -> list[RevealInfo]:
        return [RevealInfo(r["name"], ()) for r in self.plan.data["reveals"]]

    def local_inputs(self, con: Any, site: str = "site", site_index: int | None = None, holds_data: bool = True) -> U64:
        """Bind this site's connection for the model's local steps; shared up front: only the
        ledger query's failure word (0 here; :meth:`failed_vector` when the query failed)."""
        self.site.update(con=con, holds_data=holds_data)
        return np.zeros(self.input_size, dtype=np.uint64)

    def failed_vector(self) -> U64:
        """This site's ledger query failed: its failure word is 1, and every member fails alike."""
        return np.ones(self.input_size, dtype=np.uint64)

    def opened(self, meta: dict[str, Any]) -> np.ndarray:
        """The query sets a released model opened (the ledger remembers them): its one set, or,
        for a model whose result lists its ``released`` groups (VALIDATE), each of those groups'
        sets (one set per group with BY), so a group withheld by the release rule is not."""
        shape = self.ledger_shape(1)[:2]
        if "released" not in meta or len(shape) < 2:
            return np.ones(shape, dtype=bool)
        groups = [int(i) for i in meta["released"]]
        if not all(0 <= i < shape[0] for i in groups):  # never expected: remember every set (the safe side)
            return np.ones(shape, dtype=bool)
        opened = np.zeros(shape, dtype=bool)  # group i is set i (without BY: one group, one set)
        opened[groups, 0] = True
        return opened

    def program(self, p: Party, inputs: list[AShare], remembered: int = 0) -> Protocol[tuple[AShare, dict[str, Any]]]:
        """The ledger's checks on the shared inputs (nothing to check without a ledger query),
        then the model's program, which shares its own vectors step by step."""
        if self.input_size:
            pooled = pool_sites(inputs)
            tests = pooled[:1]  # how many sites' ledger queries failed
            if remembered:
                k = int(self.plan.data["params"]["min_cell_size"])
                stop = yield from ledger_stops(p, pooled[1:].reshape(*self.ledger_shape(remembered)), k)
                tests = AShare.concat([tests, stop.reshape(-1)])
            opened = (yield from ar.open_all(p, tests)).view(np.int64)
            if opened[0]:
                return empty_outcome(local_failed=True)
            if opened[1:].any():
                message = (
                    "the model's rows (or a BY group's or stratum's) differ from rows released to you before by 1 to "
                    f"{int(self.plan.data['params']['min_cell_size']) - 1} persons"
                )
                return empty_outcome(refused=LEDGER_RULE, message=message)

        def step(params: dict[str, Any] | None) -> U64:
            own = self.model.local(self.plan, self.site["con"], bool(self.site["holds_data"]), params)
            remote = self.site.get("remote")  # the input-only sites' shares at the same parameters
            return own if remote is None else np.concatenate([own, remote(params, own.size)])

        return (yield from self.model.program(p, self.plan, step))

    def explain(self) -> str:
        """The model's own explanation, then its ledger query (the persons of its query set) and
        output review's terms, if it is held."""
        text = self.model.explain(self.plan).rstrip()
        ledger = self.plan.data.get("ledger")
        if ledger is not None:
            text += f"\nRelease ledger (each site, its persons):\n   [ledger] {ledger['sql']}"
        review = self.plan.data.get("review")
        if review is not None:
            sizes = (
                "the persons of the model's rows, its events (binary and survival outcomes) and each BY "
                "group's persons (VALIDATE) are each"
            )
            text += "\n" + "\n".join(review_lines(review, sizes))
        return text
