"""Each site's DP accountant: every analyst's spent privacy budget, kept on disk.

Every DP query carries its RDP curve in the plan (:mod:`site_agent.query.dp`); the accountant
adds the curves of the analyst's queries within the budget's period (RDP composition, Mironov
2017) and converts the sum to (epsilon, delta) at the policy's delta
(:func:`site_agent.privacy.skellam.epsilon`, the conversion the query was calibrated with). So the
spent budget after one query is the epsilon that query was calibrated to, and after several it is
a valid (epsilon, delta) bound of their composition: RDP curves add under composition, and each
query's curve bounds its own Renyi divergence at every order. A query runs only if the analyst's
spent budget with it stays within the strictest site's ``epsilon``; otherwise every site refuses
it, naming that site and the rule ``epsilon``.

**Check and spend are one step** (:meth:`Accountant.reserve`, under a lock): a query is reserved
in the account, on disk, before its session starts, so no share moves for a query that is not
counted, and two queries of one analyst in flight together (two clients) are decided on an
account that already holds the other. A reservation counts as spent from then on. It is
*committed* once the member passed the agreement round (from then on inputs are shared and
values may be opened: the analyst may learn something, so it stays spent whatever happens
next), and *returned* only when the query stopped before that: another member refused it, the
plans or ledgers differed, a peer failed or the agent stopped during the agreement round.
Returning it then is safe because at that point this member has sent no share of any input and
nothing has been opened, and why the query stopped depends on the members' policies, accounts
and links, never on data (a failing local step does not stop a query before the agreement: it
becomes a secret failure word, opened later, after the commit). So the analyst's view of a
returned query is independent of every person's data: it costs no privacy.

Concurrent queries of one analyst can reach the members in different orders. So that the
members' independent decisions still add up (with budget for N more queries and N + 3 in
flight, exactly N are answered), a query is ordered by its signed envelope (timestamp, then
digest), the same at every member, and decided by the *wait-die* rule of database concurrency
control (Rosenkrantz, Stearns, Lewis, "System Level Concurrency Control for Distributed Database
Systems", ACM TODS 1978): if it fits with everything reserved, it is reserved; if it would fit
were it not for reservations of *younger* queries in flight here (which may still be returned),
it waits for them to settle (:data:`WAIT`); otherwise it is refused. Waits only go from older to
younger queries, so they cannot form a cycle, and the oldest query a member refused for want of
budget was refused on older queries that were all answered: every refusal is for budget truly
spent.

The state is one JSON file per analyst beside the site's release ledger and audit log (written
atomically, so it survives restarts and crashes); each entry is a query (the first 16 hex digits
of its envelope digest, as in its audit entry's receipt), its envelope time, epsilon, RDP curve
and state (``reserved`` or ``charged``). A reservation found on disk that no running session of
this agent holds (the agent stopped during a query) counts as charged: its query may have opened
values before the agent stopped. Each DP audit entry records whether its query is in the
account (``charged``) and the spent epsilon with it.

Times are the signed envelope's timestamp, so every member decides a period's window alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, PolicyRefusal
from ..policy.privacy import PrivacyPolicy
from . import skellam

RESERVED = "reserved"
CHARGED = "charged"
WAIT = "wait"
""":meth:`Accountant.reserve`'s answer when the query must wait for younger queries in flight."""


@dataclass(frozen=True)
class Charge:
    """One DP query in an analyst's account: when (envelope time), its epsilon and RDP curve, and
    whether it is charged or reserved by a session in flight."""

    query: str
    time: float
    epsilon: float
    rdp: tuple[float, ...]
    state: str = CHARGED

    @property
    def order(self) -> tuple[float, str]:
        """Older first: the signed envelope's time, then its digest (the same at every member)."""
        return (self.time, self.query)

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "time": self.time,
            "epsilon": self.epsilon,
            "rdp": list(self.rdp),
            "state": self.state,
        }


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
    """One site's charges per analyst, in ``folder`` (one file each). One agent process owns the
    folder; its lock makes every read-decide-write of an account one step."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._live: set[tuple[str, str]] = set()  # (analyst, query) reserved by sessions in flight here

    def _path(self, analyst: str) -> Path:
        return self.folder / f"{hashlib.sha256(analyst.encode()).hexdigest()[:32]}.json"

    def charges(self, analyst: str) -> list[Charge]:
        """The account: charged queries and reservations (a reservation no session of this agent
        holds is shown as charged, see the module docstring)."""
        path = self._path(analyst)
        if not path.exists():
            return []
        try:
            raw = json.loads(path.read_text())
            out = [
                Charge(
                    str(c["query"]),
                    float(c["time"]),
                    float(c["epsilon"]),
                    tuple(map(float, c["rdp"])),
                    str(c.get("state", CHARGED)),
                )
                for c in raw
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: the privacy accountant's file is damaged ({exc})") from None
        return [c if c.state == CHARGED or (analyst, c.query) in self._live else replace(c, state=CHARGED) for c in out]

    def _write(self, analyst: str, charges: list[Charge]) -> None:
        """Replace the account atomically: a crash leaves the old or the new one, never half."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(analyst)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([c.to_json() for c in charges], sort_keys=True))
        os.replace(tmp, path)

    def charged(self, analyst: str, query: str) -> bool:
        """Whether the query (the first 16 hex digits of its envelope digest) is in the account."""
        return any(c.query == query for c in self.charges(analyst))

    def _within(self, charges: list[Charge], budget: PrivacyPolicy, now: float) -> list[Charge]:
        period = budget.period_seconds
        return [c for c in charges if period is None or c.time > now - period]

    @staticmethod
    def _curve(charges: list[Charge]) -> np.ndarray:
        curve = np.zeros(len(skellam.ORDERS))
        for c in charges:
            curve = curve + np.asarray(c.rdp)
        return curve

    def spent(self, analyst: str, budget: PrivacyPolicy, now: float) -> Spent:
        """The analyst's spent epsilon in the period ending ``now`` (RDP composition of the
        charged and reserved queries)."""
        within = self._within(self.charges(analyst), budget, now)
        eps = skellam.epsilon(self._curve(within), budget.delta) if within else 0.0
        return Spent(eps, budget.epsilon, budget.delta, budget.period, len(within))

    def _decide(
        self, within: list[Charge], rdp: list[float] | tuple[float, ...], budget: PrivacyPolicy, site: str
    ) -> float:
        after = skellam.epsilon(self._curve(within) + np.asarray(rdp), budget.delta)
        if after > budget.epsilon + 1e-9:
            before = skellam.epsilon(self._curve(within), budget.delta) if within else 0.0
            raise PolicyRefusal(
                site,
                "epsilon",
                f"the privacy budget is spent: {before:.3g} of epsilon {budget.epsilon:g} used "
                f"(period {budget.period}); this query would bring it to {after:.3g}",
            )
        return after

    def reserve(self, analyst: str, query: Charge, budget: PrivacyPolicy, site: str) -> str:
        """Check and reserve ``query`` in one step (its time is ``now``): :data:`RESERVED` (written
        to disk), :data:`WAIT` (it fits but for younger queries in flight here: call again when one
        settles), or ``PolicyRefusal(site, "epsilon")``. The wait-die rule of the module docstring."""
        with self._lock:
            charges = self.charges(analyst)
            if any(c.query == query.query for c in charges):  # the envelope check refuses replays first
                raise PolicyRefusal(site, "epsilon", "this query is already in the privacy budget's account")
            within = self._within(charges, budget, query.time)
            try:
                self._decide(within, query.rdp, budget, site)
            except PolicyRefusal:
                older = [c for c in within if c.state == CHARGED or c.order < query.order]
                if len(older) == len(within):
                    raise
                self._decide(older, query.rdp, budget, site)  # refuses if older queries leave no room
                return WAIT
            self._write(analyst, [*charges, replace(query, state=RESERVED)])
            self._live.add((analyst, query.query))
            return RESERVED

    def commit(self, analyst: str, query: str) -> None:
        """A reserved query becomes charged for good (its session passed the agreement round)."""
        with self._lock:
            self._live.discard((analyst, query))
            charges = self.charges(analyst)
            self._write(analyst, [replace(c, state=CHARGED) if c.query == query else c for c in charges])

    def give_back(self, analyst: str, query: str) -> None:
        """Return a reservation: the query stopped before this member shared anything (see the
        module docstring for why that costs no privacy)."""
        with self._lock:
            if (analyst, query) not in self._live:  # only a reservation of a session in flight here
                return
            self._live.discard((analyst, query))
            self._write(analyst, [c for c in self.charges(analyst) if c.query != query])
