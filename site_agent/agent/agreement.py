"""The first round of every query session: members agree on the plan before any share moves.

Each member sends both others its verdict (0 = accepts, otherwise a refusal code), the
SHA-256 digest of the plan it compiled, and the digests of its release ledger and privacy
accountant for the analyst. Any refusal or digest mismatch stops the session
on every member at once, naming the member, instead of leaving the others to time out.
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


def agree(
    p: Party, plan_digest: str, verdict: int, names: dict[int, str], ledger: str = "", budget: str = ""
) -> Protocol[None]:
    """Exchange (verdict, plan digest, ledger digest, budget digest) with both peers; raise if any
    refuses or differs.

    ``ledger`` is the digest of the names of the query sets this member remembers for the
    analyst (:meth:`site_agent.privacy.ledger.Ledger.digest`): members must compare the new
    query with the same remembered sets. ``budget`` is the digest of the analyst's DP charges
    (:meth:`site_agent.privacy.accountant.Accountant.digest`): members must decide the query's
    budget on the same account (the plan digest covers its epsilon and RDP curve)."""
    mine = np.concatenate([np.array([verdict], dtype=np.uint64), _words(plan_digest), _words(ledger), _words(budget)])
    peers = [q for q in (0, 1, 2) if q != p.index]
    got = yield from exchange(send={q: mine for q in peers}, expect={q: 1 + 3 * DIGEST_WORDS for q in peers})
    if verdict != ACCEPT:
        raise QueryRefused(names[p.index], "this site refused the query")
    for q in peers:
        if int(got[q][0]) != ACCEPT:
            raise QueryRefused(names[q], f"site {names[q]} refused the query")
    for q in peers:
        if not np.array_equal(got[q][1 : 1 + DIGEST_WORDS], mine[1 : 1 + DIGEST_WORDS]):
            raise PlanMismatch(f"site {names[q]} compiled a different plan (digest mismatch): nothing was shared")
    ledger_words = slice(1 + DIGEST_WORDS, 1 + 2 * DIGEST_WORDS)
    for q in peers:
        if not np.array_equal(got[q][ledger_words], mine[ledger_words]):
            raise PlanMismatch(
                f"site {names[q]} remembers different released query sets for this analyst "
                "(its release ledger differs): nothing was shared"
            )
    for q in peers:
        if not np.array_equal(got[q][1 + 2 * DIGEST_WORDS :], mine[1 + 2 * DIGEST_WORDS :]):
            raise PlanMismatch(
                f"site {names[q]} keeps a different privacy budget account for this analyst "
                "(its accountant differs): nothing was shared"
            )
