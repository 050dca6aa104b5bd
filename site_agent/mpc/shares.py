"""Replicated shares held by one party, and the local (communication-free) operations.

Party i holds two components of each secret: ``v[0] = x_i`` and ``v[1] = x_{i+1}``,
stored as one ``uint64`` array of shape ``(2, *shape)`` so a local operation is a single
numpy call on both components.

* :class:`AShare`: arithmetic sharing, x = x_0 + x_1 + x_2 (mod 2^64).
* :class:`BShare`: boolean sharing of bit-packed words, x = x_0 ^ x_1 ^ x_2.

Share arrays are written once: every operation returns new arrays and nothing mutates a
share after it is built. Protocols rely on that to send a component without copying it.

Operations that need communication (products, comparisons, truncation) are protocols
in :mod:`.arithmetic` and :mod:`.boolean`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from .ring import U64, asring

S = TypeVar("S", bound="_Pair")


class _Pair:
    """Shape handling common to both sharings."""

    __slots__ = ("v",)

    def __init__(self, v: U64) -> None:
        if v.dtype != np.uint64 or v.ndim < 1 or v.shape[0] != 2:
            raise ValueError("shares are a uint64 array of shape (2, ...)")
        self.v = v

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.v.shape[1:])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def reshape(self: S, *shape: int) -> S:
        return type(self)(self.v.reshape(2, *shape))

    def ravel(self: S) -> S:
        return type(self)(self.v.reshape(2, -1))

    def __getitem__(self: S, index: object) -> S:
        idx = index if isinstance(index, tuple) else (index,)
        return type(self)(self.v[(slice(None), *idx)])

    @property
    def T(self: S) -> S:  # noqa: N802 - numpy's name
        return type(self)(np.swapaxes(self.v, 1, 2) if self.v.ndim == 3 else self.v)

    @classmethod
    def concat(cls: type[S], parts: Sequence[S], axis: int = 0) -> S:
        return cls(np.concatenate([p.v for p in parts], axis=axis + 1))

    @classmethod
    def from_pair(cls: type[S], first: U64, second: U64) -> S:
        return cls(np.stack([first, second]))

    def copy(self: S) -> S:
        return type(self)(self.v.copy())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"


class AShare(_Pair):
    """One party's arithmetic replicated shares (x_i, x_{i+1})."""

    __slots__ = ()

    def __add__(self, other: AShare) -> AShare:
        return AShare(self.v + other.v)

    def __sub__(self, other: AShare) -> AShare:
        return AShare(self.v - other.v)

    def __neg__(self) -> AShare:
        return AShare(np.uint64(0) - self.v)

    def mul_public(self, c: npt.ArrayLike) -> AShare:
        """Multiply by public integers (ring elements); no truncation."""
        return AShare(self.v * asring(c))

    def lshift(self, bits: int) -> AShare:
        return AShare(self.v << np.uint64(bits))

    def sum(self, axis: int | None = None) -> AShare:
        """Sum of elements (local): all elements, or along ``axis`` of the shape."""
        if axis is None:
            return AShare(self.v.reshape(2, -1).sum(axis=1, dtype=np.uint64))
        return AShare(self.v.sum(axis=axis + 1, dtype=np.uint64))

    def cumsum(self, axis: int = 0) -> AShare:
        """Prefix sums (local: addition needs no communication)."""
        return AShare(np.cumsum(self.v, axis=axis + 1, dtype=np.uint64))


class BShare(_Pair):
    """One party's boolean replicated shares of bit-packed 64-bit words."""

    __slots__ = ()

    def __xor__(self, other: BShare) -> BShare:
        return BShare(self.v ^ other.v)

    def and_public(self, mask: npt.ArrayLike) -> BShare:
        return BShare(self.v & asring(mask))

    def lshift(self, bits: int) -> BShare:
        return BShare(self.v << np.uint64(bits))

    def rshift(self, bits: int) -> BShare:
        return BShare(self.v >> np.uint64(bits))
