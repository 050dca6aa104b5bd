"""How a site words what it decided about a query, for the analyst and for its audit log.

Shared by the committee members (:mod:`.service`) and the input-only sites (:mod:`.input_site`),
so a refusal reads the same wherever it was decided.
"""

from __future__ import annotations

from collections.abc import Collection

from ..crypto.envelope import Envelope
from ..errors import AuthError, LocalStepError, PeerFailure, PolicyRefusal, QueryError, QueryRefused
from ..policy import Policy
from ..privacy.accountant import Accountant
from . import planning
from .inputs import InputSiteRefused

REFUSALS = ("auth", "policy", "query", "refused")
"""Categories whose audit decision is "refused" (the others are "failed")."""


def classify(
    exc: Exception, site: str, committee: dict[int, str], input_sites: Collection[str] = ()
) -> tuple[str, str, str]:
    """(category, rule, site) of an error for the analyst's one-line message; ``site`` is always
    a site name: this one, or the committee member or input site ``exc`` names (a peer failure
    may carry a committee index, looked up in ``committee``)."""
    if isinstance(exc, InputSiteRefused):
        return exc.category, exc.rule, exc.site
    if isinstance(exc, PolicyRefusal):
        return "policy", exc.rule, exc.site
    if isinstance(exc, LocalStepError):
        return "local", "", site
    if isinstance(exc, QueryRefused):
        return "refused", "", exc.site
    if isinstance(exc, QueryError):
        return "query", "", site
    if isinstance(exc, AuthError):
        return "auth", "", site
    if isinstance(exc, PeerFailure):
        peer = exc.peer
        if isinstance(peer, int) and peer in committee:
            return "peer", "", committee[peer]
        if isinstance(peer, str) and (peer in committee.values() or peer in input_sites):
            return "peer", "", peer
        return "peer", "", site
    return "failed", "", site


def privacy_record(
    accountant: Accountant, env: Envelope, plan: planning.AnyCompiled, policy: Policy
) -> dict[str, float | str] | None:
    """What the audit entry of a DP query records: its epsilon and delta, whether it was
    charged (a query is charged once the sites agreed, even if it failed later), and the
    analyst's spent budget at this site with it (the combined policy's budget)."""
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
