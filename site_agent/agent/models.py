"""A compiled model statement at one member: the daemon's view of a model's plan.

Same interface as :class:`~site_agent.agent.planning.Compiled`, cut for models
(:mod:`site_agent.models.statement`): a model's local steps run inside its MPC session, at
public parameters only the session knows (a coefficient iterate), so :meth:`local_inputs`
shares nothing up front; it binds this site's connection, and the program's
:class:`~site_agent.mpc.party.LocalStep` requests run the model's local step on it (in a
worker thread, by the network adapter). Its vectors are shared inside the program.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..models.statement import ModelKind, kind_of
from ..mpc.party import Party, Protocol
from ..mpc.ring import U64
from ..mpc.shares import AShare
from .planning import Compiled, RevealInfo


@dataclass(frozen=True)
class ModelCompiled(Compiled):
    """A model's plan; ``site`` holds the connection bound by :meth:`local_inputs`."""

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
        return 0

    @property
    def reveals(self) -> list[RevealInfo]:
        return [RevealInfo(r["name"], ()) for r in self.plan.data["reveals"]]

    def local_inputs(self, con: Any, site: str = "site", site_index: int | None = None, holds_data: bool = True) -> U64:
        """Bind this site's connection for the model's local steps; nothing is shared up front."""
        self.site.update(con=con, holds_data=holds_data)
        return np.zeros(0, dtype=np.uint64)

    def failed_vector(self) -> U64:
        """A failing ledger query cannot happen (a model has no ledger query): nothing to share."""
        return np.zeros(0, dtype=np.uint64)

    def program(self, p: Party, inputs: list[AShare], remembered: int = 0) -> Protocol[tuple[AShare, dict[str, Any]]]:
        del inputs, remembered  # a model shares its own vectors, step by step

        def step(params: dict[str, Any] | None) -> U64:
            return self.model.local(self.plan, self.site["con"], bool(self.site["holds_data"]), params)

        return (yield from self.model.program(p, self.plan, step))

    def explain(self) -> str:
        return self.model.explain(self.plan)
