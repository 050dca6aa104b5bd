"""Splitting values into replicated shares and putting them back together.

These are the operations of parties *outside* the committee: a site inputs its local
pre-aggregates, the analyst reconstructs the revealed outputs.

* :func:`deal` splits x into x_0 + x_1 + x_2 and gives party i the pair (x_i, x_{i+1}).
  :func:`deal_compressed` sends x_0 and x_1 as 16-byte seeds, so only x_2 travels as an
  array (to two parties) and party 0 receives two seeds.
* :func:`reconstruct` takes the three pairs; every component arrives twice, so a party
  that sends a wrong share is caught (the mismatch raises :class:`ProtocolViolation`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import ProtocolViolation
from .ring import U64, asring
from .shares import AShare, BShare

SEED_BYTES = 16


def expand_seed(seed: bytes, n: int) -> U64:
    """n pseudorandom ring elements from a 16-byte seed (AES-128-CTR keystream)."""
    if len(seed) != SEED_BYTES:
        raise ProtocolViolation("share seeds are 16 bytes")
    enc = Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor()
    return np.frombuffer(enc.update(bytes(8 * n)), dtype="<u8").astype(np.uint64)


def deal(values: U64, rng: np.random.Generator | None = None) -> list[AShare]:
    """Split ring elements into three replicated shares (party i gets (x_i, x_{i+1}))."""
    x = asring(values)
    gen = rng if rng is not None else np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
    x0 = gen.integers(0, 2**64, size=x.shape, dtype=np.uint64)
    x1 = gen.integers(0, 2**64, size=x.shape, dtype=np.uint64)
    comps = (x0, x1, x - x0 - x1)
    return [AShare.from_pair(comps[i], comps[(i + 1) % 3]) for i in range(3)]


@dataclass(frozen=True)
class CompressedShare:
    """Party i's pair (x_i, x_{i+1}), each either a 16-byte seed or an array."""

    first: bytes | U64
    second: bytes | U64

    def expand(self, shape: tuple[int, ...]) -> AShare:
        n = int(np.prod(shape, dtype=np.int64))
        parts = []
        for comp in (self.first, self.second):
            arr = expand_seed(comp, n) if isinstance(comp, bytes) else np.asarray(comp, dtype=np.uint64)
            if arr.size != n:
                raise ProtocolViolation(f"share has {arr.size} elements, expected {n}")
            parts.append(arr.reshape(shape))
        return AShare.from_pair(parts[0], parts[1])


def deal_compressed(values: U64) -> list[CompressedShare]:
    """Like :func:`deal` with x_0, x_1 derived from fresh seeds: ~n words sent twice."""
    x = asring(values).reshape(-1)
    s0, s1 = os.urandom(SEED_BYTES), os.urandom(SEED_BYTES)
    x2 = x - expand_seed(s0, x.size) - expand_seed(s1, x.size)
    return [CompressedShare(s0, s1), CompressedShare(s1, x2), CompressedShare(x2, s0)]


def reconstruct(shares: Sequence[AShare]) -> U64:
    """Open arithmetic shares from all three parties, checking each duplicate component."""
    return _reconstruct(shares, xor=False)


def reconstruct_bool(shares: Sequence[BShare]) -> U64:
    """Open boolean shares from all three parties, checking each duplicate component."""
    return _reconstruct(shares, xor=True)


def _reconstruct(shares: Sequence[AShare] | Sequence[BShare], xor: bool) -> U64:
    if len(shares) != 3:
        raise ProtocolViolation("reconstruction needs the shares of all three parties")
    for i in range(3):
        if not np.array_equal(shares[i].v[1], shares[(i + 1) % 3].v[0]):
            raise ProtocolViolation(f"parties {i} and {(i + 1) % 3} disagree on a share component")
    a, b, c = (s.v[0] for s in shares)
    with np.errstate(over="ignore"):  # 0-d shares are numpy scalars, which warn on wrap
        out: U64 = (a ^ b ^ c) if xor else (a + b + c)
    return out
