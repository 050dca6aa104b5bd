"""How a site words what it decided about a query, for the analyst and for its audit log.

Shared by the committee members (:mod:`.service`) and the input-only sites (:mod:`.input_site`),
so a refusal reads the same wherever it was decided.
"""

from __future__ import annotations

from collections.abc import Collection

from ..errors import AuthError, LocalStepError, PeerFailure, PolicyRefusal, QueryError, QueryRefused
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
