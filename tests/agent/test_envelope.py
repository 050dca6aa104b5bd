"""The analyst's signed query envelope: acceptance and every refusal."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from site_agent.crypto.envelope import Envelope, ReplayCache, sign_envelope, verify_envelope
from site_agent.errors import AuthError, BadSignature, ReplayedEnvelope, StaleEnvelope

T0 = 1_800_000_000
KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()


def _env(params: dict[str, object] | None = None) -> Envelope:
    return sign_envelope(
        KEY, query="SELECT count(*) FROM lung", consortium="c1", analyst="alice", params=params, now=T0
    )


def test_good_envelope_accepted_and_round_trips() -> None:
    env = _env(params={"k": 5})
    wire = Envelope.from_json(env.to_json())
    assert wire == env
    verify_envelope(wire, PUB, "c1", now=T0 + 3, replay_cache=ReplayCache())
    assert len(env.nonce) == 32 and int(env.nonce, 16) >= 0
    # The signature covers the canonical body: verify it independently of our helper.
    body = json.loads(env.to_json())
    sig = bytes.fromhex(body.pop("signature"))
    PUB.verify(sig, json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def test_nonces_differ() -> None:
    assert _env().nonce != _env().nonce


@pytest.mark.parametrize(
    "change",
    [
        {"query": "SELECT count(*) FROM lung WHERE 1=1"},
        {"analyst": "bob"},
        {"timestamp": T0 + 1},
        {"params": {"k": 1}},
        {"nonce": "0" * 32},
    ],
)
def test_any_signed_field_change_breaks_signature(change: dict[str, object]) -> None:
    env = replace(_env(), **change)  # type: ignore[arg-type]
    with pytest.raises(BadSignature):
        verify_envelope(env, PUB, "c1", now=T0, replay_cache=ReplayCache())


def test_flipped_signature_bit() -> None:
    env = _env()
    sig = bytearray.fromhex(env.signature)
    sig[10] ^= 1
    with pytest.raises(BadSignature):
        verify_envelope(replace(env, signature=sig.hex()), PUB, "c1", now=T0, replay_cache=ReplayCache())


def test_key_of_another_analyst_refused() -> None:
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(BadSignature):
        verify_envelope(_env(), other, "c1", now=T0, replay_cache=ReplayCache())


def test_wrong_consortium_refused() -> None:
    with pytest.raises(AuthError, match="consortium"):
        verify_envelope(_env(), PUB, "c2", now=T0, replay_cache=ReplayCache())


def test_replay_refused_until_expiry() -> None:
    cache = ReplayCache()
    env = _env()
    verify_envelope(env, PUB, "c1", now=T0, replay_cache=cache)
    with pytest.raises(ReplayedEnvelope):
        verify_envelope(env, PUB, "c1", now=T0 + 60, replay_cache=cache)
    # Once the envelope is too old to pass, the age check refuses it (and the nonce may go).
    with pytest.raises(StaleEnvelope):
        verify_envelope(env, PUB, "c1", now=T0 + 200, replay_cache=cache)
    # After the window the nonce is forgotten: memory stays bounded.
    cache._purge(T0 + 200)
    assert len(cache) == 0


def test_bad_signature_does_not_burn_nonce() -> None:
    cache = ReplayCache()
    env = _env()
    forged = replace(env, query="SELECT * FROM lung")
    with pytest.raises(BadSignature):
        verify_envelope(forged, PUB, "c1", now=T0, replay_cache=cache)
    verify_envelope(env, PUB, "c1", now=T0, replay_cache=cache)


def test_stale_and_future_refused() -> None:
    env = _env()
    verify_envelope(env, PUB, "c1", now=T0 + 120, replay_cache=ReplayCache())
    with pytest.raises(StaleEnvelope, match="old"):
        verify_envelope(env, PUB, "c1", now=T0 + 121, replay_cache=ReplayCache())
    verify_envelope(env, PUB, "c1", now=T0 - 5, replay_cache=ReplayCache())
    with pytest.raises(StaleEnvelope, match="future"):
        verify_envelope(env, PUB, "c1", now=T0 - 6, replay_cache=ReplayCache())


def test_full_cache_fails_closed() -> None:
    cache = ReplayCache(max_entries=2)
    for _ in range(2):
        verify_envelope(_env(), PUB, "c1", now=T0, replay_cache=cache)
    with pytest.raises(AuthError, match="too many"):
        verify_envelope(_env(), PUB, "c1", now=T0, replay_cache=cache)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"query": "x"}',
    ],
)
def test_malformed_wire_refused(text: str) -> None:
    with pytest.raises(AuthError, match="malformed"):
        Envelope.from_json(text)


def test_wire_field_types_checked() -> None:
    body = json.loads(_env().to_json())
    body["timestamp"] = str(body["timestamp"])
    with pytest.raises(AuthError, match="timestamp"):
        Envelope.from_json(json.dumps(body))


def test_uppercase_signature_refused() -> None:
    env = _env()
    with pytest.raises(AuthError, match="lowercase hex"):
        verify_envelope(replace(env, signature=env.signature.upper()), PUB, "c1", now=T0, replay_cache=ReplayCache())
