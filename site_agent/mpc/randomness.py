"""Correlated randomness from pairwise PRF keys (AES-128 in counter mode).

Replicated sharing (Araki et al., CCS 2016; ABY3, Mohassel-Rindal, CCS 2018) gives party
i the components (x_i, x_{i+1}) of every secret x = x_0 + x_1 + x_2. Component j is held by
parties j - 1 and j, and so is PRF key K_j: the two holders of a component can draw the
same pseudorandom words without talking. From that:

* ``stream(j, n)``: n words both holders of K_j draw alike;
* ``zero_share(n)``: party i's alpha_i = F(K_i) - F(K_{i+1}); the three sum to zero
  (``xor_zero_share`` likewise with XOR, for boolean sharing).

Every holder of a key must draw from it the same amounts in the same order; protocols
keep their draws symmetric for that reason. Keys come from a seed (tests, benchmarks) or
from the session set-up of the network layer; this module never touches I/O.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .ring import U64

KEY_BYTES = 16


class _Stream:
    """One AES-CTR keystream, read as little-endian uint64 words."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("PRF keys are 16 bytes")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
        self._zeros = bytearray()

    def words(self, n: int) -> U64:
        nbytes = 8 * n
        if len(self._zeros) < nbytes:
            self._zeros = bytearray(nbytes)
        # update_into needs 15 spare bytes; an uninitialised buffer avoids zero-filling.
        out = np.empty(n + 2, dtype=np.uint64)
        self._enc.update_into(memoryview(self._zeros)[:nbytes], out.data.cast("B"))
        return out[:n]


class Randomness:
    """Party ``index``'s view of the three pairwise keys: it holds K_i and K_{i+1}."""

    def __init__(self, index: int, keys: dict[int, bytes]) -> None:
        if index not in (0, 1, 2):
            raise ValueError("party index must be 0, 1 or 2")
        held = {index, (index + 1) % 3}
        if set(keys) != held:
            raise ValueError(f"party {index} must hold exactly keys {sorted(held)}")
        self.index = index
        self._streams = {j: _Stream(k) for j, k in keys.items()}

    @classmethod
    def from_seed(cls, index: int, seed: bytes | int, session: bytes = b"") -> Randomness:
        """Keys derived from a common seed: for tests and in-process runs only."""
        seed_bytes = seed.to_bytes(16, "little") if isinstance(seed, int) else seed
        keys = {
            j: hashlib.blake2b(seed_bytes + session, digest_size=KEY_BYTES, person=f"mpc-key-{j}".encode()).digest()
            for j in (index, (index + 1) % 3)
        }
        return cls(index, keys)

    def holds(self, j: int) -> bool:
        return j in self._streams

    def stream(self, j: int, n: int) -> U64:
        """n words from key K_j; only its two holders may call this."""
        return self._streams[j].words(n)

    def zero_share(self, n: int) -> U64:
        """alpha_i = F(K_i) - F(K_{i+1}); the three parties' values sum to 0."""
        i = self.index
        out = self.stream(i, n)
        out -= self.stream((i + 1) % 3, n)
        return out

    def xor_zero_share(self, n: int) -> U64:
        """F(K_i) ^ F(K_{i+1}); the three parties' values XOR to 0."""
        i = self.index
        out = self.stream(i, n)
        out ^= self.stream((i + 1) % 3, n)
        return out
