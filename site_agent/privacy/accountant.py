"""Each site's DP accountant: every analyst's spent privacy budget, kept on disk.

Every DP query carries its RDP curve in the plan (:mod:`site_agent.query.dp`); the accountant
adds the curves of the analyst's queries within the budget's period (RDP composes by addition,
Mironov 2017) and converts the sum to (epsilon, delta) at the policy's delta
(:func:`site_agent.privacy.skellam.epsilon`). A query runs only if the analyst's spent budget
with it stays within the strictest site's ``epsilon``; otherwise every site refuses it, naming
that site and the rule ``epsilon``.

The state is one JSON file per analyst beside the site's release ledger (written atomically, so
it survives restarts and crashes). Like the ledger's, its digest joins the agreement round
(:mod:`site_agent.agent.agreement`): members whose accounts differ stop before any share moves,
so no site can be talked into answering on a budget the others consider spent. A query is
charged at every member as soon as the members agreed on it, before its inputs are shared: a
query that fails afterwards still counts (nothing is ever released uncharged).

Times are the signed envelope's timestamp, so every member decides a period's window alike.

Concurrent queries of one analyst (the notebook client sends one at a time; two clients of the
same analyst need not): each is decided on the account as it was when its session started, and
charged at every member once they agreed. Two queries in flight together can therefore each pass
on the same account and overspend the budget by the later one's epsilon; they never leave the
members' accounts different (the digest does not depend on the order of the charges), and a
query whose members saw different accounts stops in the agreement round, uncharged.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, PolicyRefusal
from ..policy.privacy import PrivacyPolicy
from . import skellam


@dataclass(frozen=True)
class Charge:
    """One DP query charged to an analyst: when (envelope time), its epsilon and RDP curve."""

    query: str
    time: float
    epsilon: float
    rdp: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "time": self.time, "epsilon": self.epsilon, "rdp": list(self.rdp)}


@dataclass(frozen=True)
class Spent:
    """An analyst's budget at one site: what is spent in the current period and what is left."""

    epsilon: float
    budget: float
    delta: float
    period: str
    queries: int

    @property
    def remaining(self) -> float:
        return max(0.0, self.budget - self.epsilon)

    def to_json(self) -> dict[str, Any]:
        return {
            "spent": self.epsilon,
            "remaining": self.remaining,
            "budget": self.budget,
            "delta": self.delta,
            "period": self.period,
            "queries": self.queries,
        }


class Accountant:
    """One site's charges per analyst, in ``folder`` (one file each)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, analyst: str) -> Path:
        return self.folder / f"{hashlib.sha256(analyst.encode()).hexdigest()[:32]}.json"

    def charges(self, analyst: str) -> list[Charge]:
        path = self._path(analyst)
        if not path.exists():
            return []
        try:
            raw = json.loads(path.read_text())
            return [
                Charge(str(c["query"]), float(c["time"]), float(c["epsilon"]), tuple(map(float, c["rdp"]))) for c in raw
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: the privacy accountant's file is damaged ({exc})") from None

    def charged(self, analyst: str, query: str) -> bool:
        """Whether the query (the first 16 hex digits of its envelope digest) was charged."""
        return any(c.query == query for c in self.charges(analyst))

    def digest(self, analyst: str) -> str:
        """sha256 of the analyst's charges in (time, query) order: equal at every member that
        charged the same queries, in whatever order they were charged."""
        charges = sorted(self.charges(analyst), key=lambda c: (c.time, c.query))
        text = json.dumps([c.to_json() for c in charges], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def _curve(self, analyst: str, budget: PrivacyPolicy, now: float) -> tuple[np.ndarray, int]:
        period = budget.period_seconds
        within = [c for c in self.charges(analyst) if period is None or c.time > now - period]
        curve = np.zeros(len(skellam.ORDERS))
        for c in within:
            curve = curve + np.asarray(c.rdp)
        return curve, len(within)

    def spent(self, analyst: str, budget: PrivacyPolicy, now: float) -> Spent:
        """The analyst's spent epsilon in the period ending ``now`` (RDP composition)."""
        curve, n = self._curve(analyst, budget, now)
        eps = skellam.epsilon(curve, budget.delta) if n else 0.0
        return Spent(eps, budget.epsilon, budget.delta, budget.period, n)

    def check(self, analyst: str, rdp: list[float], budget: PrivacyPolicy, now: float, site: str) -> float:
        """The analyst's spent epsilon with this query; ``PolicyRefusal(site, "epsilon")`` if it
        would exceed ``budget`` (``site``: the one whose budget is the strictest)."""
        curve, _ = self._curve(analyst, budget, now)
        after = skellam.epsilon(curve + np.asarray(rdp), budget.delta)
        if after > budget.epsilon + 1e-9:
            before = self.spent(analyst, budget, now).epsilon
            raise PolicyRefusal(
                site,
                "epsilon",
                f"the privacy budget is spent: {before:.3g} of epsilon {budget.epsilon:g} used "
                f"(period {budget.period}); this query would bring it to {after:.3g}",
            )
        return after

    def charge(self, analyst: str, charge: Charge) -> None:
        """Record a query (atomically: a crash leaves the old or the new account, never half)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(analyst)
        charges = [c.to_json() for c in self.charges(analyst)] + [charge.to_json()]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(charges, sort_keys=True))
        os.replace(tmp, path)
