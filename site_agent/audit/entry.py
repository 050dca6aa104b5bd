"""One audit entry: its fields, its hash, its signature, and the receipt the analyst keeps.

An entry is a JSON object written on one line in canonical form (sorted keys, no whitespace,
ASCII only). ``hash`` is the SHA-256 of the canonical JSON of every other field, including
``prev``, the hash of the entry before (64 zeros for the first), so the entries form a chain.
``signature`` is the site's Ed25519 signature over ``SIGNING_CONTEXT + hash``: the receipt
(site, seq, hash, signature) can be checked with the site's public key without the entry, and
later matched against the site's log.

Entries hold names and shapes of what was revealed, never values.

Optional fields (``OPTIONAL_FIELDS``) are present only when they apply, so entries written
before they existed still verify: ``kind``, the statement kind of the compiled plan
(``aggregate``, ``per_site_breakdown``, ``model``), ``rule``, the policy key that refused, and
``review``, for output review (``{"id": query id, "action": held | approved | denied |
released | expired | discarded, "sites": reviewing sites}``), and ``privacy`` for a DP query
(epsilon, delta and the analyst's budget at the site; :mod:`site_agent.privacy.accountant`).
Like every field, they are covered by the entry's hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from site_agent.crypto.envelope import canonical_json
from site_agent.crypto.signing import Ed25519PrivateKey, Ed25519PublicKey, is_lower_hex, verify

GENESIS = "0" * 64
SIGNING_CONTEXT = b"mpc-jupyter.audit.v1:"
Decision = Literal["accepted", "refused", "failed"]
DECISIONS: tuple[Decision, ...] = ("accepted", "refused", "failed")
FIELDS = frozenset(
    {
        "seq",
        "time",
        "site",
        "analyst",
        "query",
        "query_digest",
        "plan_digest",
        "policy_digest",
        "decision",
        "reason",
        "reveals",
        "peers",
        "timings",
        "prev",
        "hash",
        "signature",
    }
)
OPTIONAL_FIELDS = frozenset({"kind", "rule", "review", "privacy"})
REVIEW_ACTIONS = ("held", "approved", "denied", "released", "expired", "discarded")
EXPLAINED = "explain: the plan was described; nothing was computed or revealed"
"""The reason of an entry that records an ``--explain`` request (accepted, nothing revealed)."""


@dataclass(frozen=True)
class Reveal:
    """A value opened to the analyst, by name and array shape only."""

    name: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"name": ..., "shape": [...]}``."""
        return {"name": self.name, "shape": list(self.shape)}


@dataclass(frozen=True)
class Receipt:
    """What the analyst receives from each site: proof that the request is in the site's log."""

    site: str
    seq: int
    hash: str
    signature: str

    def to_json(self) -> dict[str, Any]:
        """The receipt as JSON values (for the wire and for ``DataFrame.attrs``)."""
        return {"site": self.site, "seq": self.seq, "hash": self.hash, "signature": self.signature}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Receipt:
        """Parse a receipt; ``ValueError`` if fields are missing or mistyped."""
        site, seq, digest, signature = data.get("site"), data.get("seq"), data.get("hash"), data.get("signature")
        if not (isinstance(site, str) and isinstance(seq, int) and isinstance(digest, str)):
            raise ValueError("malformed receipt")
        if not isinstance(signature, str):
            raise ValueError("malformed receipt")
        return cls(site=site, seq=seq, hash=digest, signature=signature)


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of the entry without ``hash`` and ``signature``."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def sign_hash(key: Ed25519PrivateKey, digest: str) -> str:
    """The site's signature over an entry hash, hex."""
    return key.sign(SIGNING_CONTEXT + digest.encode()).hex()


def verify_receipt(receipt: Receipt, public_key: Ed25519PublicKey) -> None:
    """Check a receipt's signature with the site's key; ``BadSignature`` if it does not verify."""
    if not (is_lower_hex(receipt.hash, 32) and is_lower_hex(receipt.signature, 64)):
        raise ValueError("receipt hash or signature is not lowercase hex of the right length")
    verify(public_key, SIGNING_CONTEXT + receipt.hash.encode(), bytes.fromhex(receipt.signature))


def make_body(
    *,
    seq: int,
    time: str,
    site: str,
    analyst: str,
    query: str,
    plan_digest: str | None,
    policy_digest: str,
    decision: Decision,
    reason: str,
    reveals: Sequence[Reveal],
    peers: Sequence[str],
    timings: Mapping[str, float],
    prev: str,
    privacy: Mapping[str, float | str] | None = None,
    kind: str | None = None,
    rule: str | None = None,
    review: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of an entry before hashing, validated so nothing but names and shapes goes in.

    ``privacy``, ``kind``, ``rule`` and ``review`` are written only when given (see ``OPTIONAL_FIELDS``)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    if not all(isinstance(r, Reveal) for r in reveals):
        raise TypeError("reveals must be Reveal(name, shape) objects: names and shapes, never values")
    body: dict[str, Any] = {
        "seq": seq,
        "time": time,
        "site": site,
        "analyst": analyst,
        "query": query,
        "query_digest": hashlib.sha256(query.encode()).hexdigest(),
        "plan_digest": plan_digest,
        "policy_digest": policy_digest,
        "decision": decision,
        "reason": reason,
        "reveals": [r.to_json() for r in reveals],
        "peers": list(peers),
        "timings": {str(k): float(v) for k, v in timings.items()},
        "prev": prev,
        **({"privacy": {str(k): v for k, v in privacy.items()}} if privacy is not None else {}),
    }
    for name, value in (("kind", kind), ("rule", rule)):
        if value is not None:
            body[name] = str(value)
    if review is not None:
        if review.get("action") not in REVIEW_ACTIONS:
            raise ValueError(f"review action must be one of {REVIEW_ACTIONS}")
        body["review"] = {"id": str(review["id"]), "action": str(review["action"]), "sites": list(review["sites"])}
    return body
