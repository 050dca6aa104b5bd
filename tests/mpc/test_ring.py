"""Z_2^64 as uint64 arrays: conversions and the bit helpers."""

import numpy as np
import pytest

from site_agent.mpc.ring import asring, reverse_bits


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint32, np.uint64, np.bool_])
def test_integers_become_ring_elements_modulo_2_64(dtype: type) -> None:
    values = np.array([0, 1, 5] if dtype is not np.bool_ else [False, True, True], dtype=dtype)
    if np.issubdtype(dtype, np.signedinteger):
        values = np.concatenate([values, np.array([-1, -7], dtype=dtype)])
    out = asring(values)
    assert out.dtype == np.uint64
    assert [int(v) for v in out] == [int(v) % 2**64 for v in values]


def test_non_integers_are_refused() -> None:
    with pytest.raises(TypeError, match=r"^ring elements must be integers, got dtype float64$"):
        asring(np.array([1.5]))


def test_reverse_bits_against_python_strings() -> None:
    words = np.random.default_rng(3).integers(0, 2**64, size=(4, 5), dtype=np.uint64)
    out = reverse_bits(words)
    assert out.shape == words.shape and out.dtype == np.uint64
    assert [int(v) for v in out.ravel()] == [int(f"{int(w):064b}"[::-1], 2) for w in words.ravel()]
