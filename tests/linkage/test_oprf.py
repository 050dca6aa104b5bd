"""The distributed 2HashDH OPRF: the protocol's keys are F_k computed directly from the whole key,
one share alone gives nothing related, and malformed points are refused."""

from __future__ import annotations

import hashlib

import pytest
from nacl import bindings as sodium

from site_agent.errors import ProtocolViolation
from site_agent.linkage import oprf

IDS = [b"9434765919", b"9434765920", "Zoë|1970-01-02|F".encode(), b""]


def run_protocol(shares: list[bytes], ids: list[bytes]) -> list[int]:
    blinded = oprf.blind(ids)
    answers = [oprf.evaluate(k, blinded.message, max_points=len(ids)) for k in shares]
    return [int(k) for k in oprf.finalize(blinded, answers)]


def independent_prf(key: bytes, identifier: bytes) -> int:
    """H2(x, H1(x)^k) written out from libsodium and hashlib, without the module's helpers."""
    h = hashlib.sha512(oprf.H1_TAG + len(identifier).to_bytes(4, "big") + identifier).digest()
    point = sodium.crypto_core_ed25519_add(
        sodium.crypto_core_ed25519_from_uniform(h[:32]), sodium.crypto_core_ed25519_from_uniform(h[32:])
    )
    y = sodium.crypto_scalarmult_ed25519_noclamp(key, point)
    out = hashlib.sha512(oprf.H2_TAG + len(identifier).to_bytes(4, "big") + identifier + y).digest()
    return int.from_bytes(out[:8], "little")


def test_keys_equal_the_prf_under_the_recombined_key() -> None:
    shares = [oprf.new_key_share() for _ in range(3)]
    k = oprf.combine_shares(shares)
    assert run_protocol(shares, IDS) == [independent_prf(k, x) for x in IDS]
    # Deterministic across batches (fresh blinding each time) and distinct across identifiers.
    assert run_protocol(shares, IDS[::-1]) == [independent_prf(k, x) for x in IDS[::-1]]
    assert len(set(run_protocol(shares, IDS))) == len(IDS)


def test_a_new_key_gives_unrelated_keys() -> None:
    a = run_protocol([oprf.new_key_share() for _ in range(3)], IDS)
    b = run_protocol([oprf.new_key_share() for _ in range(3)], IDS)
    assert not set(a) & set(b)


def test_one_share_cannot_compute_the_key_of_a_guess() -> None:
    # A member holding k_0 evaluates a guessed identifier with everything it has: its own share
    # (as if it were the whole key), or its share with the others taken as zero. Neither matches
    # the linkage key, which depends on the two shares it does not hold.
    shares = [oprf.new_key_share() for _ in range(3)]
    guess = IDS[0]
    (real,) = run_protocol(shares, [guess])
    assert independent_prf(shares[0], guess) != real
    assert int(oprf.prf(shares[0], guess)) != real
    # Changing a share it does not hold changes every key: k_0 determines nothing alone.
    other = [shares[0], oprf.new_key_share(), shares[2]]
    assert run_protocol(other, [guess]) != [real]


def test_what_a_member_receives_is_a_fresh_random_point() -> None:
    # The same identifier blinded twice gives unrelated points: a member cannot tell repeats.
    a, b = oprf.blind([IDS[0]]), oprf.blind([IDS[0]])
    assert a.message != b.message
    assert sodium.crypto_core_ed25519_is_valid_point(a.message)
    assert a.message != oprf.hash_to_group(IDS[0])


def test_hash_lands_in_the_prime_order_subgroup() -> None:
    for x in IDS:
        assert sodium.crypto_core_ed25519_is_valid_point(oprf.hash_to_group(x))


def test_malformed_batches_and_points_are_refused() -> None:
    k = oprf.new_key_share()
    good = oprf.blind(IDS[:2]).message
    with pytest.raises(ProtocolViolation):
        oprf.evaluate(k, good[:-1])
    with pytest.raises(ProtocolViolation):
        oprf.evaluate(k, good, max_points=1)
    identity = (1).to_bytes(32, "little")  # the neutral element: small order
    with pytest.raises(ProtocolViolation):
        oprf.evaluate(k, identity)
    blinded = oprf.blind(IDS[:1])
    with pytest.raises(ProtocolViolation):
        oprf.finalize(blinded, [oprf.evaluate(k, blinded.message)] * 2)
    with pytest.raises(ProtocolViolation):
        oprf.finalize(blinded, [identity, identity, identity])


def test_key_shares_are_checked() -> None:
    k = oprf.new_key_share()
    assert oprf.check_key_share(k) == k
    for bad in (bytes(32), b"\xff" * 32, k[:31]):
        with pytest.raises(ValueError):
            oprf.check_key_share(bad)


def test_batch_inversion_matches_one_inversion_each() -> None:
    scalars = [oprf.new_key_share() for _ in range(7)]
    assert oprf.batch_invert(scalars) == [bytes(sodium.crypto_core_ed25519_scalar_invert(s)) for s in scalars]
    assert oprf.batch_invert(scalars[:1]) == [bytes(sodium.crypto_core_ed25519_scalar_invert(scalars[0]))]
    assert oprf.batch_invert([]) == []


def test_an_answer_with_a_small_order_part_is_refused() -> None:
    # A member adding a point of order 2 (the encoding of (0, -1)) to its answers: the sum
    # leaves the prime-order subgroup and the site refuses it instead of deriving a wrong key.
    shares = [oprf.new_key_share() for _ in range(3)]
    blinded = oprf.blind(IDS[:1])
    answers = [oprf.evaluate(k, blinded.message) for k in shares]
    order_two = (2**255 - 19 - 1).to_bytes(32, "little")
    answers[1] = bytes(sodium.crypto_core_ed25519_add(answers[1], order_two))
    with pytest.raises(ProtocolViolation):
        oprf.finalize(blinded, answers)
