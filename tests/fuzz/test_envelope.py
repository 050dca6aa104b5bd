"""Hostile envelopes: any change to a signed envelope fails verification, with an AuthError.

One genuine envelope is signed; hypothesis changes one field (or several), or damages its
wire text, and the site's checks (parse, then verify) must refuse it with an ``AuthError``
subclass. A wire text that still parses to exactly the signed envelope is the only thing
allowed to verify.
"""

from __future__ import annotations

import dataclasses
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from site_agent.crypto.envelope import Envelope, ReplayCache, sign_envelope, verify_envelope
from site_agent.crypto.signing import generate_signing_key
from site_agent.errors import AuthError

FUZZ = settings(max_examples=200, deadline=None)
KEY = generate_signing_key()
CONSORTIUM = "local-consortium-1"
NOW = time.time()
GENUINE = sign_envelope(
    KEY, query="SELECT COUNT(*) AS n FROM patients", consortium=CONSORTIUM, analyst="ana", params={"k": 1}, now=NOW
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
changes = st.fixed_dictionaries(
    {},
    optional={
        "query": st.text(max_size=60),
        "consortium": st.text(max_size=20),
        "analyst": st.text(max_size=10),
        "nonce": st.text("0123456789abcdef", min_size=32, max_size=32),
        "timestamp": st.integers(int(NOW) - 100, int(NOW) + 3),
        "params": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "signature": st.text("0123456789abcdef", min_size=128, max_size=128),
    },
)


def accepted(env: Envelope) -> bool:
    """The site's checks: True if the envelope verifies; only AuthError may refuse it."""
    try:
        verify_envelope(env, KEY.public_key(), CONSORTIUM, NOW, ReplayCache())
    except AuthError:
        return False
    return True


def test_the_genuine_envelope_verifies() -> None:
    assert accepted(GENUINE) and accepted(Envelope.from_json(GENUINE.to_json()))


@FUZZ
@given(changes)
def test_changed_fields_never_verify(change: dict) -> None:  # type: ignore[type-arg]
    env = dataclasses.replace(GENUINE, **change)
    assert accepted(env) == (env == GENUINE)


@FUZZ
@given(st.data())
def test_damaged_wire_text_never_verifies(data: st.DataObject) -> None:
    wire = bytearray(GENUINE.to_json().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(wire) - 1))
        how = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if how == "flip":
            wire[at] ^= data.draw(st.integers(1, 255))
        elif how == "insert":
            wire[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            del wire[at]
    try:
        env = Envelope.from_json(bytes(wire))
    except AuthError:
        return
    assert accepted(env) == (env == GENUINE)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_text_is_refused_as_malformed(text: bytes | str) -> None:
    try:
        env = Envelope.from_json(text)
    except AuthError:
        return
    assert not accepted(env)


@FUZZ
@given(st.integers(1, 200_000), st.sampled_from(["[", '{"a":']))
def test_deeply_nested_json_is_refused_as_malformed(depth: int, opener: str) -> None:
    try:
        env = Envelope.from_json(opener * depth)
    except AuthError:
        return
    assert not accepted(env)
