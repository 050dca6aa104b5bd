"""Fixed-point and integer encodings: round trips, range limits, overflow is an error."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from site_agent.errors import EncodingError
from site_agent.mpc.fixed import FixedPoint, decode_int, encode_int
from site_agent.mpc.ring import parity, reverse_bits

FP = FixedPoint()


@given(st.lists(st.floats(-1e12, 1e12), min_size=1, max_size=50))
def test_round_trip_within_half_ulp(xs: list[float]) -> None:
    x = np.array(xs)
    assert np.all(np.abs(FP.decode(FP.encode(x)) - x) <= 2.0 ** -(FP.frac_bits + 1) + 1e-9 * np.abs(x))


def test_negatives_zero_and_limits() -> None:
    x = np.array([0.0, -0.0, -1.5, 1.5, -(2.0**45), 2.0**45])
    assert np.array_equal(FP.decode(FP.encode(x)), x)
    assert FP.encode([-1.0])[0] == np.uint64(2**64 - 2**16)


@pytest.mark.parametrize("bad", [2.0**46, -(2.0**46), float("nan"), float("inf"), -float("inf")])
def test_out_of_range_is_an_error_not_a_wrap(bad: float) -> None:
    with pytest.raises(EncodingError):
        FP.encode([1.0, bad])


def test_higher_precision_has_smaller_range() -> None:
    fp24 = FixedPoint(24)
    assert fp24.max_abs == 2.0**38 and fp24.max_product == 2.0**14
    with pytest.raises(EncodingError):
        fp24.encode([2.0**38])
    with pytest.raises(EncodingError):
        FixedPoint(40)


def test_integers() -> None:
    v = np.array([0, -1, 2**61, -(2**61)])
    assert np.array_equal(decode_int(encode_int(v)), v)
    with pytest.raises(EncodingError):
        encode_int([2**62])
    with pytest.raises(EncodingError):
        encode_int([1.5])


@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20))
def test_bit_helpers_against_python(words: list[int]) -> None:
    w = np.array(words, dtype=np.uint64)
    assert [int(v) for v in reverse_bits(w)] == [int(f"{v:064b}"[::-1], 2) for v in words]
    assert [int(v) for v in parity(w)] == [bin(v).count("1") % 2 for v in words]
