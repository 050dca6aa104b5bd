"""The analyst's signed query envelope, and its verification at each site.

The analyst's kernel signs what it asks, not how to compute it: the query text plus the
consortium id, the analyst id, a random nonce and a timestamp. Each site checks the envelope on
its own before compiling the text, in this order (cheap first, state last):

1. the consortium id is this consortium's (an envelope for another consortium is never valid here);
2. the Ed25519 signature verifies under the analyst's registered key;
3. the timestamp is neither older than ``max_age`` nor further in the future than ``skew``;
4. the (analyst, nonce) pair was not seen before; only now is it remembered, so unsigned
   garbage cannot fill the replay cache.

Signed bytes are the canonical JSON of the body (sorted keys, no whitespace, ASCII only) with a
``type`` tag, so an envelope signature can never be mistaken for another kind of signed object.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from site_agent.crypto.signing import Ed25519PrivateKey, Ed25519PublicKey, is_lower_hex, verify
from site_agent.errors import AuthError, ReplayedEnvelope, StaleEnvelope

ENVELOPE_TYPE = "mpc-jupyter.query.v1"
MAX_AGE_SECONDS = 120
CLOCK_SKEW_SECONDS = 5
NONCE_BYTES = 16


def canonical_json(obj: Any) -> bytes:
    """Sorted-key compact ASCII JSON: one byte string per value, so signatures are reproducible."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


@dataclass(frozen=True)
class Envelope:
    """A signed query: what the analyst asks, for which consortium, when, and a one-time nonce."""

    query: str
    consortium: str
    analyst: str
    nonce: str
    timestamp: int
    params: Mapping[str, Any] = field(default_factory=dict)
    signature: str = ""

    def body(self) -> dict[str, Any]:
        """The signed fields as a plain dict (everything but the signature)."""
        return {
            "type": ENVELOPE_TYPE,
            "query": self.query,
            "consortium": self.consortium,
            "analyst": self.analyst,
            "nonce": self.nonce,
            "timestamp": self.timestamp,
            "params": dict(self.params),
        }

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature covers."""
        return canonical_json(self.body())

    def digest(self) -> str:
        """SHA-256 of the signed bytes, hex: a stable id for this request across all sites."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def to_json(self) -> str:
        """The envelope for the wire: the body plus its hex signature."""
        return canonical_json({**self.body(), "signature": self.signature}).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        """Parse a wire envelope; ``AuthError`` if malformed (wrong type, fields or field types)."""
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nesting too deep
            raise AuthError("malformed envelope: not JSON") from exc
        if not isinstance(raw, dict):
            raise AuthError("malformed envelope: not an object")
        expected = {"type", "query", "consortium", "analyst", "nonce", "timestamp", "params", "signature"}
        if set(raw) != expected:
            raise AuthError(f"malformed envelope: fields {sorted(raw)} (expected {sorted(expected)})")
        if raw["type"] != ENVELOPE_TYPE:
            raise AuthError(f"malformed envelope: type {raw['type']!r} is not {ENVELOPE_TYPE!r}")
        for name in ("query", "consortium", "analyst", "nonce", "signature"):
            if not isinstance(raw[name], str):
                raise AuthError(f"malformed envelope: {name} is not a string")
        if not isinstance(raw["timestamp"], int) or isinstance(raw["timestamp"], bool):
            raise AuthError("malformed envelope: timestamp is not an integer")
        if not isinstance(raw["params"], dict):
            raise AuthError("malformed envelope: params is not an object")
        return cls(
            query=raw["query"],
            consortium=raw["consortium"],
            analyst=raw["analyst"],
            nonce=raw["nonce"],
            timestamp=raw["timestamp"],
            params=raw["params"],
            signature=raw["signature"],
        )


def sign_envelope(
    key: Ed25519PrivateKey,
    *,
    query: str,
    consortium: str,
    analyst: str,
    params: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> Envelope:
    """Make and sign an envelope with a fresh random nonce, dated ``now`` (default: the clock)."""
    unsigned = Envelope(
        query=query,
        consortium=consortium,
        analyst=analyst,
        nonce=secrets.token_hex(NONCE_BYTES),
        timestamp=int(time.time() if now is None else now),
        params=dict(params or {}),
    )
    signature = key.sign(unsigned.signed_bytes()).hex()
    return replace(unsigned, signature=signature)


class ReplayCache:
    """Remembers (analyst, nonce) pairs until their envelopes could no longer pass the age check.

    Entries expire by themselves, so memory is bounded by the accepted request rate times the
    window. If ``max_entries`` is reached anyway the cache refuses new envelopes (fails closed)
    rather than forgetting nonces that are still replayable.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._expiry: dict[tuple[str, str], float] = {}
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        self._expiry = {k: t for k, t in self._expiry.items() if t > now}

    def remember(self, analyst: str, nonce: str, expires_at: float, now: float) -> None:
        """Record a nonce; raise ``ReplayedEnvelope`` if it is already known and not expired."""
        key = (analyst, nonce)
        known = self._expiry.get(key)
        if known is not None and known > now:
            raise ReplayedEnvelope(f"envelope nonce {nonce[:8]}… from {analyst!r} was already used")
        if len(self._expiry) >= self._max_entries:
            self._purge(now)
            if len(self._expiry) >= self._max_entries:
                raise AuthError("too many recent requests to track replays; try again shortly")
        self._expiry[key] = expires_at


def verify_envelope(
    env: Envelope,
    analyst_public_key: Ed25519PublicKey,
    consortium_id: str,
    now: float,
    replay_cache: ReplayCache,
    max_age: float = MAX_AGE_SECONDS,
    skew: float = CLOCK_SKEW_SECONDS,
) -> None:
    """Accept the envelope or raise an ``AuthError`` subclass saying why (see module docstring).

    The caller looks up ``analyst_public_key`` by ``env.analyst`` in the consortium file; an
    analyst who is not registered there has no key and never reaches this function.
    """
    if env.consortium != consortium_id:
        raise AuthError(f"envelope is for consortium {env.consortium!r}, not {consortium_id!r}")
    if not is_lower_hex(env.nonce, NONCE_BYTES):
        raise AuthError("envelope nonce must be 16 random bytes in lowercase hex")
    if not is_lower_hex(env.signature, 64):
        raise AuthError("envelope signature must be 64 bytes in lowercase hex")
    verify(analyst_public_key, env.signed_bytes(), bytes.fromhex(env.signature))
    age = now - env.timestamp
    if age > max_age:
        raise StaleEnvelope(f"envelope is {age:.0f} s old (at most {max_age:.0f} s allowed)")
    if age < -skew:
        raise StaleEnvelope(f"envelope is dated {-age:.0f} s in the future (clock skew at most {skew:.0f} s)")
    replay_cache.remember(env.analyst, env.nonce, expires_at=env.timestamp + max_age + skew, now=now)
