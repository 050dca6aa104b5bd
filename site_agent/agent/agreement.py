"""The first round of every query session: members agree on the plan before any share moves.

Each member sends both others its verdict (0 = accepts, otherwise a refusal code), the
SHA-256 digest of the plan it compiled, and the digest of its release ledger for the analyst.
Any refusal or digest mismatch stops the session on every member at once, naming the member,
instead of leaving the others to time out.

The DP budget is not compared here: each member has already reserved the query in its own
account before the round (:mod:`site_agent.privacy.accountant`), so a query runs only if every
member's account has room for it; accounts may differ for a moment while concurrent queries of
one analyst settle in different orders, and that must not stop either query.
Pure protocol code (a generator), so it runs in-process in tests and over TLS in the daemon.
"""

from __future__ import annotations

import numpy as np

from ..errors import PlanMismatch, QueryRefused
from ..mpc.party import Party, Protocol, exchange

ACCEPT = 0
REFUSE = 1
DIGEST_WORDS = 4


def _words(digest: str) -> np.ndarray:
    raw = bytes.fromhex(digest) if digest else bytes(32)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def agree(p: Party, plan_digest: str, verdict: int, names: dict[int, str], ledger: str = "") -> Protocol[None]:
    """Exchange (verdict, plan digest, ledger digest) with both peers; raise if any refuses or
    differs.

    ``ledger`` is the digest of the names of the query sets this member remembers for the
    analyst (:meth:`site_agent.privacy.ledger.Ledger.digest`): members must compare the new
    query with the same remembered sets."""
    mine = np.concatenate([np.array([verdict], dtype=np.uint64), _words(plan_digest), _words(ledger)])
    peers = [q for q in (0, 1, 2) if q != p.index]
    got = yield from exchange(send={q: mine for q in peers}, expect={q: 1 + 2 * DIGEST_WORDS for q in peers})
    if verdict != ACCEPT:
        raise QueryRefused(names[p.index], "this site refused the query")
    for q in peers:
        if int(got[q][0]) != ACCEPT:
            raise QueryRefused(names[q], f"site {names[q]} refused the query")
    for q in peers:
        if not np.array_equal(got[q][1 : 1 + DIGEST_WORDS], mine[1 : 1 + DIGEST_WORDS]):
            raise PlanMismatch(f"site {names[q]} compiled a different plan (digest mismatch): nothing was shared")
    for q in peers:
        if not np.array_equal(got[q][1 + DIGEST_WORDS :], mine[1 + DIGEST_WORDS :]):
            raise PlanMismatch(
                f"site {names[q]} remembers different released query sets for this analyst "
                "(its release ledger differs): nothing was shared"
            )
