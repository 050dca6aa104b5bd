"""The local operations on one member's shares, against plaintext numpy after reconstruction."""

import numpy as np
import pytest

from site_agent.mpc.shares import AShare, BShare
from site_agent.mpc.sharing import deal, reconstruct, reconstruct_bool

RNG = np.random.default_rng(12)
MATRIX = RNG.integers(0, 2**64, size=(3, 4), dtype=np.uint64)


def _bool_deal(words: np.ndarray) -> list[BShare]:
    a, b = RNG.integers(0, 2**64, size=(2, *words.shape), dtype=np.uint64)
    comps = (a, b, words ^ a ^ b)
    return [BShare.from_pair(comps[i], comps[(i + 1) % 3]) for i in range(3)]


def test_arithmetic_local_operations() -> None:
    shares = deal(MATRIX, RNG)
    np.testing.assert_array_equal(reconstruct([-s for s in shares]), np.uint64(0) - MATRIX)
    np.testing.assert_array_equal(reconstruct([s.lshift(5) for s in shares]), MATRIX << np.uint64(5))
    np.testing.assert_array_equal(reconstruct([s.sum() for s in shares]), MATRIX.sum(dtype=np.uint64))
    np.testing.assert_array_equal(reconstruct([s.sum(axis=1) for s in shares]), MATRIX.sum(axis=1, dtype=np.uint64))
    np.testing.assert_array_equal(reconstruct([s.cumsum() for s in shares]), np.cumsum(MATRIX, axis=0, dtype=np.uint64))
    np.testing.assert_array_equal(
        reconstruct([s.cumsum(axis=1) for s in shares]), np.cumsum(MATRIX, axis=1, dtype=np.uint64)
    )


def test_boolean_local_operations() -> None:
    shares = _bool_deal(MATRIX)
    mask = np.uint64(0x0F0F_0000_FFFF_0001)
    np.testing.assert_array_equal(reconstruct_bool([s.and_public(mask) for s in shares]), MATRIX & mask)
    np.testing.assert_array_equal(reconstruct_bool([s.lshift(3) for s in shares]), MATRIX << np.uint64(3))


def test_shape_handling() -> None:
    share = deal(MATRIX, RNG)[0]
    assert len(share) == 3 and share.shape == (3, 4) and share.size == 12
    assert share.ravel().shape == (12,)
    np.testing.assert_array_equal(share[1].v, share.v[:, 1])  # a plain index, not a tuple
    np.testing.assert_array_equal(share[1, 2].v, share.v[:, 1, 2])
    np.testing.assert_array_equal(AShare.concat([share, share]).v, np.concatenate([share.v, share.v], axis=1))
    copied = share.copy()
    assert isinstance(copied, AShare) and np.array_equal(copied.v, share.v) and copied.v is not share.v
    assert repr(share) == "AShare(shape=(3, 4))"


def test_shares_are_uint64_pairs() -> None:
    for bad in (np.zeros((3, 2), dtype=np.uint64), np.zeros((2, 2), dtype=np.int64), np.uint64(0)):
        with pytest.raises(ValueError, match=r"^shares are a uint64 array of shape \(2, \.\.\.\)$"):
            AShare(bad)
