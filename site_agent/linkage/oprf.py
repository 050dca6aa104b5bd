"""Linkage keys from a distributed oblivious PRF: 2HashDH with the key shared by the committee.

The construction is 2HashDH (Jarecki, Kiayias and Krawczyk, "Round-optimal password-protected
secret sharing and T-PAKE in the password-only model", ASIACRYPT 2014; the same PRF as the
OPRF mode of RFC 9497):

    F_k(x) = H2(x, H1(x)^k)

in a group of prime order L, here the prime-order subgroup of edwards25519 through libsodium
(PyNaCl). The PRF key is additively shared among the three committee members,
k = k_0 + k_1 + k_2 (mod L); member i holds k_i only, so H1(x)^k = prod_i H1(x)^{k_i}: the
threshold evaluation of the same paper's T-PAKE section, with all three members needed.

One evaluation, for a site holding identifiers x_1..x_n (:func:`blind`, :func:`evaluate`,
:func:`finalize`):

1. the site draws a fresh scalar r_j per identifier and sends every member the batch
   B_j = H1(x_j)^{r_j} (one batch per member, split into frames under the frame limit);
2. member i answers E_ij = B_j^{k_i}, the same batch in the same order;
3. the site multiplies the three answers, H1(x_j)^{r_j k}, raises it to 1/r_j to get
   H1(x_j)^k, and hashes it with x_j to a 64-bit linkage key (H2).

**Group and hash.** libsodium's ``crypto_core_ed25519_from_uniform`` is Elligator 2 followed by
clearing the cofactor, so it lands in the prime-order subgroup; H1 adds two of them on the two
halves of SHA-512(tag || x), the shape of RFC 9380's random-oracle ``hash_to_curve``. (PyNaCl
does not bind libsodium's ristretto255 functions, which RFC 9497's suite names; the group is
the same prime-order group, encoded differently, so keys here are not RFC 9497's test-vector
bytes.) ``crypto_scalarmult_ed25519_noclamp`` refuses points that are not canonical, have
small order or lie outside the prime-order subgroup, and a result that is the identity: a
member never raises a malformed point to its share, and a site never accepts one as an answer.

**What each party learns** (semi-honest, at most one party corrupted, as everywhere here):

* A *member* sees B_j, a uniformly random element of the group whatever x_j (r_j is uniform
  and secret), so its view is independent of the identifiers and of which of them match
  other sites'. Holding k_i alone it can compute H1(x)^{k_i} for a guessed x, which is
  independent of F_k(x) while the other two shares are unknown: it cannot test a guess
  against a linkage key. The keys never reach a member in the clear (they enter MPC as shares).
* A curious *site* learns F_k on its own identifiers, and on any identifier it chooses to
  submit: it is the client of the OPRF. That is harmless while no other site's key ever
  reaches it (they only travel as shares into the committee): a dictionary of F_k values has
  nothing to be compared with. Members bound each batch (site_agent.agent.linkage.MAX_POINTS)
  and audit who asked for how many points; the number of persons is public anyway (the plan's
  set sizes).
* Two colluding members (beyond the threat model) recover k and can test guesses; the
  honest majority is what protects the identifiers, as it protects every share.

Every site must normalise identifiers alike before this (:mod:`.identifiers`); F_k of two
spellings of one person are unrelated.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
from nacl import bindings as sodium
from nacl import exceptions as sodium_errors

from ..errors import ProtocolViolation
from ..mpc.ring import U64

POINT_BYTES = 32
SCALAR_BYTES = 32
H1_TAG = b"mpc-jupyter linkage v1 H1 edwards25519"
H2_TAG = b"mpc-jupyter linkage v1 H2"


def new_key_share() -> bytes:
    """A member's share k_i: a uniform nonzero scalar modulo L (64 random bytes reduced)."""
    while True:
        k = sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64))
        if any(k):
            return bytes(k)


def check_key_share(k: bytes) -> bytes:
    """``k`` if it is a canonical nonzero scalar (what :func:`new_key_share` writes)."""
    if len(k) != SCALAR_BYTES or not any(k) or sodium.crypto_core_ed25519_scalar_reduce(k + bytes(32)) != k:
        raise ValueError("a linkage key share is 32 bytes, a nonzero scalar below the group order")
    return k


def hash_to_group(identifier: bytes) -> bytes:
    """H1: an identifier to an element of the prime-order subgroup (two Elligator 2 maps added)."""
    h = hashlib.sha512(H1_TAG + len(identifier).to_bytes(4, "big") + identifier).digest()
    return bytes(
        sodium.crypto_core_ed25519_add(
            sodium.crypto_core_ed25519_from_uniform(h[:32]), sodium.crypto_core_ed25519_from_uniform(h[32:])
        )
    )


def _raise(point: bytes, scalar: bytes) -> bytes:
    try:
        return bytes(sodium.crypto_scalarmult_ed25519_noclamp(scalar, point))
    except sodium_errors.RuntimeError as exc:  # libsodium refused the point (or got the identity)
        raise ProtocolViolation("a linkage point is not a valid group element") from exc


def _points(data: bytes, count: int | None) -> list[bytes]:
    if len(data) % POINT_BYTES:
        raise ProtocolViolation(f"a batch of linkage points is a multiple of {POINT_BYTES} bytes")
    n = len(data) // POINT_BYTES
    if count is not None and n != count:
        raise ProtocolViolation(f"expected {count} linkage points, got {n}")
    return [data[j * POINT_BYTES : (j + 1) * POINT_BYTES] for j in range(n)]


class Blinded:
    """A site's side of one batch: the blinded points to send and the inverses to unblind."""

    def __init__(self, identifiers: Sequence[bytes]) -> None:
        self.identifiers = list(identifiers)
        blinds = [new_key_share() for _ in self.identifiers]
        self.inverses = batch_invert(blinds)
        self.message = b"".join(_raise(hash_to_group(x), r) for x, r in zip(self.identifiers, blinds, strict=True))
        """H1(x_j)^{r_j} for every identifier, concatenated: what each member receives."""


def batch_invert(scalars: Sequence[bytes]) -> list[bytes]:
    """1/s for every nonzero scalar with one inversion (Montgomery's trick: prefix products,
    one inverse, then back down), instead of one inversion each."""
    if not scalars:
        return []
    prefix = [scalars[0]]
    for s in scalars[1:]:
        prefix.append(sodium.crypto_core_ed25519_scalar_mul(prefix[-1], s))
    inv = sodium.crypto_core_ed25519_scalar_invert(prefix[-1])
    out = [b""] * len(scalars)
    for j in range(len(scalars) - 1, 0, -1):
        out[j] = bytes(sodium.crypto_core_ed25519_scalar_mul(inv, prefix[j - 1]))
        inv = sodium.crypto_core_ed25519_scalar_mul(inv, scalars[j])
    out[0] = bytes(inv)
    return out


def blind(identifiers: Sequence[bytes]) -> Blinded:
    """Step 1 at the site: fresh r_j per identifier, B_j = H1(x_j)^{r_j}."""
    return Blinded(identifiers)


def evaluate(key_share: bytes, message: bytes, max_points: int | None = None) -> bytes:
    """Step 2 at member i: B_j^{k_i} for every point of the batch, in order.

    ``max_points`` bounds the batch (the site's declared number of persons); every point is
    validated by libsodium before it is raised to the share.
    """
    points = _points(message, None)
    if max_points is not None and len(points) > max_points:
        raise ProtocolViolation(f"a linkage batch of {len(points)} points exceeds the {max_points} allowed")
    return b"".join(_raise(b, key_share) for b in points)


def finalize(blinded: Blinded, answers: Sequence[bytes]) -> U64:
    """Step 3 at the site: the 64-bit linkage keys F_k(x_j) from the three members' answers."""
    if len(answers) != 3:
        raise ProtocolViolation("a linkage key needs the answers of all three members")
    n = len(blinded.identifiers)
    per_member = [_points(a, n) for a in answers]
    keys = np.empty(n, dtype=np.uint64)
    for j, x in enumerate(blinded.identifiers):
        e0, e1, e2 = (pts[j] for pts in per_member)
        try:  # add() refuses encodings that are not points of the curve
            combined = sodium.crypto_core_ed25519_add(sodium.crypto_core_ed25519_add(e0, e1), e2)
        except sodium_errors.RuntimeError as exc:
            raise ProtocolViolation("a linkage answer is not a valid group element") from exc
        # _raise refuses a sum outside the prime-order subgroup (an answer with a small-order
        # part, which the two honest answers cannot cancel) or equal to the identity.
        keys[j] = output_key(x, _raise(combined, blinded.inverses[j]))
    return keys


def output_key(identifier: bytes, point: bytes) -> np.uint64:
    """H2: the identifier and H1(x)^k to a 64-bit linkage key (the first 8 bytes of SHA-512)."""
    h = hashlib.sha512(H2_TAG + len(identifier).to_bytes(4, "big") + identifier + point).digest()
    return np.uint64(int.from_bytes(h[:8], "little"))


def prf(key: bytes, identifier: bytes) -> np.uint64:
    """F_k(x) computed directly from a whole key (tests, and the reference for the protocol)."""
    return output_key(identifier, _raise(hash_to_group(identifier), key))


def combine_shares(shares: Sequence[bytes]) -> bytes:
    """k = k_0 + k_1 + k_2 mod L (for tests: no party ever holds this)."""
    k = bytes(SCALAR_BYTES)
    for s in shares:
        k = bytes(sodium.crypto_core_ed25519_scalar_add(k, s))
    return k
