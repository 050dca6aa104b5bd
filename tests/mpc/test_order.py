"""Prefix products, both sorts, quantiles and medians against numpy."""

import itertools
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from site_agent.mpc import order
from site_agent.mpc.fixed import FixedPoint, decode_int

from .helpers import run_open, shared

FP = FixedPoint()
ULP = 2.0**-FP.frac_bits
METHODS = ("linear", "lower", "higher", "nearest", "midpoint")

ints = arrays(np.int64, st.integers(1, 40), elements=st.integers(-50, 50))  # small range: many ties
wide = arrays(np.int64, st.integers(1, 40), elements=st.integers(-(2**62), 2**62 - 1))
# What the shuffle sort's tie-broken keys hold for n <= 64: |x| < 2^(62 - 6).
narrow = arrays(np.int64, st.integers(1, 40), elements=st.integers(-(2**56) + 1, 2**56 - 1))
ALGORITHMS = ("shuffle", "network")
reals = arrays(
    np.float64, st.integers(1, 40), elements=st.floats(-1e4, 1e4, allow_nan=False).map(lambda v: round(v, 3))
)
levels = st.lists(st.floats(0, 1), min_size=1, max_size=5)


def _apply(x: np.ndarray, layers: order.Layers) -> np.ndarray:
    x = x.copy()
    for lo, hi in layers:
        a, b = x[..., lo].copy(), x[..., hi].copy()
        x[..., lo], x[..., hi] = np.minimum(a, b), np.maximum(a, b)
    return x


@pytest.mark.parametrize("n", range(1, 13))
def test_network_sorts_every_0_1_input(n: int) -> None:
    # The 0-1 principle (Knuth, TAOCP 5.3.4): a network that sorts all 2^n 0/1 inputs sorts all inputs.
    bits = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.int64).reshape(-1, n)
    assert np.array_equal(_apply(bits, order.merge_sort_network(n)), np.sort(bits, axis=1))
    for out in range(n):
        pruned = order.merge_sort_network(n, (out,))
        assert np.array_equal(_apply(bits, pruned)[:, out], np.sort(bits, axis=1)[:, out])


@pytest.mark.parametrize("m", range(1, 9))
def test_network_size_is_batchers(m: int) -> None:
    layers = order.merge_sort_network(2**m)
    assert len(layers) == m * (m + 1) // 2
    assert sum(len(lo) for lo, _ in layers) == (m * m - m + 4) * 2 ** (m - 2) - 1
    for lo, hi in layers:  # disjoint comparators, min goes to the lower index
        assert np.all(lo < hi) and len(np.unique(np.concatenate([lo, hi]))) == 2 * len(lo)


@given(st.one_of(ints, wide))
def test_network_sort_equals_numpy(x: np.ndarray) -> None:
    xs = shared(x, seed=1)
    assert np.array_equal(decode_int(run_open(lambda p: order.sort(p, xs[p.index], "network"))), np.sort(x))


@given(st.one_of(ints, narrow))
def test_shuffle_sort_equals_numpy(x: np.ndarray) -> None:
    xs = shared(x, seed=1)
    assert np.array_equal(decode_int(run_open(lambda p: order.sort(p, xs[p.index]))), np.sort(x))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sort_rows_separately(algorithm: order.Algorithm) -> None:
    x = np.random.default_rng(2).integers(-9, 9, size=(3, 4, 13))
    xs = shared(x, seed=2)
    got = decode_int(run_open(lambda p: order.sort(p, xs[p.index], algorithm)))
    assert np.array_equal(got, np.sort(x, axis=-1))


@given(
    st.one_of(ints.map(lambda a: a.astype(np.float64)), reals),
    levels,
    st.sampled_from(METHODS),
    st.sampled_from(ALGORITHMS),
)
def test_quantile_matches_numpy(
    x: np.ndarray, q: list[float], method: order.Method, algorithm: order.Algorithm
) -> None:
    x = FP.decode(FP.encode(x))  # numpy sees exactly the encoded values
    xs = shared(x, FP, seed=3)
    got = FP.decode(run_open(lambda p: order.quantile(p, xs[p.index], q, FP, method, algorithm=algorithm)))
    want = np.quantile(x, q, method=method)
    if method in ("lower", "higher", "nearest"):
        assert np.array_equal(got, want)
    else:  # weight rounded to f bits, one probabilistic truncation
        s = np.sort(x)
        gap = np.max(np.diff(s)) if len(s) > 1 else 0.0
        assert np.all(np.abs(got - want) <= gap * ULP / 2 + ULP)


@given(st.one_of(ints, arrays(np.int64, st.integers(1, 40), elements=st.integers(-(2**39) + 1, 2**39 - 1))))
def test_median_of_integer_data_is_exact(x: np.ndarray) -> None:
    xs = shared(x.astype(np.float64), FP, seed=4)
    for method, ref in (("linear", np.median(x)), ("lower", np.quantile(x, 0.5, method="lower"))):
        got = FP.decode(run_open(lambda p, m=method: order.median(p, xs[p.index], FP, m)))
        assert got == ref


@given(reals)
def test_median_of_fixed_point_data_within_half_unit(x: np.ndarray) -> None:
    x = FP.decode(FP.encode(x))
    xs = shared(x, FP, seed=5)
    got = FP.decode(run_open(lambda p: order.median(p, xs[p.index], FP)))
    assert abs(got - np.median(x)) <= ULP / 2
    upper = FP.decode(run_open(lambda p: order.median(p, xs[p.index], FP, "higher")))
    assert upper == np.quantile(x, 0.5, method="higher")


def test_small_and_boundary_cases() -> None:
    one = shared([-7.25], FP, seed=6)
    assert FP.decode(run_open(lambda p: order.median(p, one[p.index], FP))) == -7.25
    two = shared([3.0, -1.0], FP, seed=7)
    got = FP.decode(run_open(lambda p: order.quantile(p, two[p.index], [0.0, 0.5, 1.0], FP)))
    assert np.array_equal(got, [-1.0, 1.0, 3.0])
    four = shared([4.0, 1.0, 3.0, 2.0], FP, seed=7)  # h = 1.5 and 0.75: nearest rounds half to even
    got = FP.decode(run_open(lambda p: order.quantile(p, four[p.index], [0.5, 0.25, 1e-9], FP, "nearest")))
    assert np.array_equal(got, np.quantile([4.0, 1.0, 3.0, 2.0], [0.5, 0.25, 1e-9], method="nearest"))
    tiny = FP.decode(run_open(lambda p: order.quantile(p, four[p.index], 1e-9, FP)))  # weight rounds to 0
    assert tiny == 1.0
    far = shared([-(2.0**44), 2.0**44 - 2], FP, seed=7)  # the median step needs no headroom
    assert FP.decode(run_open(lambda p: order.median(p, far[p.index], FP))) == -1.0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_batched_groups_of_different_sizes(algorithm: order.Algorithm) -> None:
    rng = np.random.default_rng(8)
    counts = np.array([1, 2, 5, 8, 7, 3])
    x = rng.integers(-100, 100, size=(6, 8)).astype(np.float64)
    xs = shared(x, FP, seed=8)
    q = [0.1, 0.5, 0.9]
    got = FP.decode(run_open(lambda p: order.quantile(p, xs[p.index], q, FP, "lower", counts, algorithm)))
    assert np.array_equal(got, [np.quantile(row[:c], q, method="lower") for row, c in zip(x, counts, strict=True)])
    med = FP.decode(run_open(lambda p: order.median(p, xs[p.index], FP, counts=counts, algorithm=algorithm)))
    assert np.array_equal(med, [np.median(row[:c]) for row, c in zip(x, counts, strict=True)])


def test_bad_arguments() -> None:
    xs = shared([1.0, 2.0], FP)
    bad = {
        "quantiles need a non-empty last axis and levels in [0, 1]": {"q": 1.5},
        "counts must lie in [1, 2]": {"q": 0.5, "counts": 3},
        "unknown quantile method 'cubic'": {"q": 0.5, "method": "cubic"},
        "unknown sort algorithm 'heap'": {"q": 0.5, "algorithm": "heap"},
    }
    for message, kwargs in bad.items():
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            run_open(lambda p, kw=kwargs: order.quantile(p, xs[p.index], fp=FP, **kw))


@given(arrays(np.int64, st.integers(1, 20), elements=st.integers(-3, 3)))
def test_prefix_prod_integers(x: np.ndarray) -> None:
    xs = shared(x, seed=9)
    assert np.array_equal(decode_int(run_open(lambda p: order.prefix_prod(p, xs[p.index], None))), np.cumprod(x))


def test_prefix_prod_fixed_point() -> None:
    x = np.random.default_rng(10).uniform(0.5, 1.5, size=(2, 33))
    xs = shared(x, FP, seed=10)
    got = FP.decode(run_open(lambda p: order.prefix_prod(p, xs[p.index], FP)))
    assert np.allclose(got, np.cumprod(x, axis=-1), rtol=0, atol=40 * ULP)
