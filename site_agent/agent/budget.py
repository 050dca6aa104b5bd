"""An analyst's DP budget at one site, as a query uses it (site_agent/privacy/accountant.py keeps it).

A DP query is checked against the budget and reserved in one step (:func:`reserve`), so queries of
one analyst in flight at once never overspend; the reservation is committed once data may be
opened (:func:`commit`: a member after the agreement round, an input-only site as it shares its
inputs) and given back only when the query stopped before (:func:`give_back`). Shared by the
committee members (:mod:`.service`) and the input-only sites (:mod:`.input_site`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ..crypto.envelope import Envelope
from ..errors import PolicyRefusal
from ..policy import Policy
from ..privacy.accountant import RESERVED, Accountant, Charge
from . import planning

POLL_SECONDS = 0.1
"""Seconds between two looks at the account while a DP query waits for younger ones to settle."""


@dataclass
class Reservation:
    """A DP query reserved in this site's account: committed once data may be opened, else given
    back when the query stops."""

    analyst: str
    query: str
    settled: bool = False  # committed or given back


async def reserve(
    accountant: Accountant, env: Envelope, dp: dict[str, Any], policy: Policy, timeout: float
) -> Reservation:
    """Check the DP query against the analyst's budget and reserve it, in one step at this site
    (:meth:`Accountant.reserve`); while only younger queries of the analyst in flight stand in the
    way, wait for them to settle (at most ``timeout`` seconds), then refuse naming the rule."""
    charge = Charge(env.digest()[:16], float(env.timestamp), float(dp["epsilon"]), tuple(dp["rdp"]))
    site = policy.budget_site()
    deadline = time.monotonic() + timeout
    while True:
        verdict = await asyncio.to_thread(accountant.reserve, env.analyst, charge, policy.privacy, site)
        if verdict == RESERVED:
            return Reservation(env.analyst, charge.query)
        if time.monotonic() > deadline:
            raise PolicyRefusal(
                site, "epsilon", "the privacy budget is held by your other queries in flight; ask again when they end"
            )
        await asyncio.sleep(POLL_SECONDS)


def commit(accountant: Accountant, reservation: Reservation | None) -> None:
    """The query may open data from now on: its reservation is spent for good."""
    if reservation is not None and not reservation.settled:
        reservation.settled = True
        accountant.commit(reservation.analyst, reservation.query)


def give_back(accountant: Accountant, reservation: Reservation | None) -> None:
    """Return a reservation whose query stopped before it was committed (nothing shared, nothing
    opened: see site_agent/privacy/accountant.py); a committed one stays."""
    if reservation is not None and not reservation.settled:
        reservation.settled = True
        accountant.give_back(reservation.analyst, reservation.query)


def privacy_record(
    accountant: Accountant, env: Envelope, plan: planning.AnyCompiled, policy: Policy
) -> dict[str, float | str] | None:
    """What the audit entry of a DP query records: its epsilon and delta, whether it was
    charged (a query is charged once committed, even if it failed later), and the analyst's
    spent budget at this site with it (the combined policy's budget)."""
    dp = plan.dp
    if dp is None:
        return None
    spent = accountant.spent(env.analyst, policy.privacy, float(env.timestamp))
    return {
        "mechanism": str(dp["mechanism"]),
        "epsilon": float(dp["epsilon"]),
        "delta": float(dp["delta"]),
        "charged": "yes" if accountant.charged(env.analyst, env.digest()[:16]) else "no",
        "spent": spent.epsilon,
        "budget": spent.budget,
        "period": spent.period,
    }
