"""Fixed-point functions against numpy: sweeps over each stated domain, edge values, and
hypothesis properties, for f = 16 and f = 24."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from site_agent.mpc import functions as fn
from site_agent.mpc.boolean import a2b, prefix_or
from site_agent.mpc.fixed import FixedPoint
from site_agent.mpc.party import Party, Protocol, Stats, run_in_memory
from site_agent.mpc.shares import AShare
from site_agent.mpc.sharing import deal, reconstruct, reconstruct_bool

Floats = npt.NDArray[np.float64]
FS = (16, 24)
TOL_ULPS = 4.0  # |error| <= 4 * 2^-f * max(1, |result|) in each domain (6 for divide)
TOL_DIVIDE = 6.0


def run(func: Callable[..., Protocol[AShare]], fp: FixedPoint, *xs: Floats) -> tuple[Floats, Stats]:
    rng = np.random.default_rng(7)
    shares = [deal(fp.encode(x), rng) for x in xs]

    def program(p: Party) -> Protocol[AShare]:
        return (yield from func(p, *[s[p.index] for s in shares], fp))

    results, stats = run_in_memory(program, seed=11)
    return fp.decode(reconstruct(results)), stats[0]


def exact(fp: FixedPoint, x: Any) -> Floats:
    """The values the protocol actually sees (inputs rounded to the fixed-point grid)."""
    return fp.decode(fp.encode(np.asarray(x, dtype=np.float64)))


def scaled_error(fp: FixedPoint, got: Floats, want: Floats) -> float:
    """max |got - want| / (2^-f max(1, |want|)): absolute ulps below 1, relative ulps above."""
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))) * fp.scale


def log_sweep(lo: float, hi: float, n: int = 300) -> Floats:
    return np.geomspace(lo, hi, n)


# Domains (from the docstrings), as functions of f.
def recip_lo(f: int) -> float:
    return max(2.0**-f, 2.0 ** (2 * f - 61) * 1.01)


def top(f: int) -> float:
    return 2.0 ** (62 - f) * 0.999


def result_max(f: int) -> float:
    return 2.0 ** (61 - 2 * f)


UNARY: dict[str, tuple[Callable[..., Protocol[AShare]], Callable[[Floats], Floats], Callable[[int], Floats]]] = {
    "reciprocal": (
        fn.reciprocal,
        lambda x: 1 / x,
        lambda f: np.concatenate([s * log_sweep(recip_lo(f), top(f)) for s in (1, -1)]),
    ),
    "sqrt": (fn.sqrt, np.sqrt, lambda f: log_sweep(2.0**-f, min(top(f), result_max(f) ** 2 * 0.999))),
    "rsqrt": (
        fn.rsqrt,
        lambda x: 1 / np.sqrt(x),
        lambda f: log_sweep(max(2.0**-f, 2.0 ** (4 * f - 122) * 1.01), top(f)),
    ),
    "exp": (
        fn.exp,
        np.exp,
        lambda f: np.linspace(-(2.0 ** (57 - 2 * f)) * 0.999, min(61 - 2 * f, 32) * math.log(2) * 0.999, 400),
    ),
    "sigmoid": (
        fn.sigmoid,
        lambda x: 1 / (1 + np.exp(-np.clip(x, -700, 700))),
        lambda f: np.concatenate([np.linspace(-40, 40, 300), np.linspace(-1, 1, 100) * 2.0 ** (57 - 2 * f) * 0.999]),
    ),
}


@pytest.mark.parametrize("f", FS)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_domain_sweep(name: str, f: int) -> None:
    func, ref, domain = UNARY[name]
    fp = FixedPoint(f)
    x = exact(fp, domain(f))
    got, _ = run(func, fp, x)
    assert scaled_error(fp, got, ref(x)) <= TOL_ULPS
    if f == 16 and name != "sigmoid":  # the target: 1e-4 relative wherever |result| >= 1
        big = np.abs(ref(x)) >= 1
        assert np.max(np.abs(got - ref(x))[big] / np.abs(ref(x))[big]) < 1e-4


@pytest.mark.parametrize("f", FS)
def test_log_sweep_absolute(f: int) -> None:
    fp = FixedPoint(f)
    x = exact(fp, log_sweep(2.0**-f, top(f)))
    got, _ = run(fn.log, fp, x)
    assert np.max(np.abs(got - np.log(x))) <= TOL_ULPS / fp.scale


@pytest.mark.parametrize("f", FS)
def test_divide_sweep(f: int) -> None:
    fp = FixedPoint(f)
    rng = np.random.default_rng(f)
    y = rng.choice([-1.0, 1.0], 400) * np.exp(rng.uniform(math.log(2.0**-f), math.log(top(f)), 400))
    q = rng.uniform(-1, 1, 400) * result_max(f) * np.exp(rng.uniform(-30, 0, 400))
    x = np.clip(q * y, -top(f), top(f))
    x, y = exact(fp, x), exact(fp, y)
    got, _ = run(fn.divide, fp, x, y)
    assert scaled_error(fp, got, x / y) <= TOL_DIVIDE


def test_divide_means_relative_error_at_f24() -> None:
    """Means from sums and counts (sum ~1e8, count ~1e6 and wider) to 1e-6 relative."""
    fp = FixedPoint(24)
    sums = np.array([1.0e8, 2.5e8, 3.7e7, 1.23456789e8, 9.9e9, 5.0e5, 1.0e11, 123.0])
    counts = np.array([1.0e6, 1.0e6, 2.0e5, 987654.0, 1.2e8, 1.0e3, 3.0e7, 1.0])
    x, y = exact(fp, sums), exact(fp, counts)
    got, _ = run(fn.divide, fp, x, y)
    assert np.max(np.abs(got - x / y) / np.abs(x / y)) < 1e-6


@pytest.mark.parametrize("f", FS)
def test_edge_values(f: int) -> None:
    fp = FixedPoint(f)
    ulp = 2.0**-f
    zeros = np.zeros(3)
    got, _ = run(fn.reciprocal, fp, exact(fp, [0.0, ulp, -ulp, 1.0, -1.0, top(f), -top(f)]))
    want = [0.0, 2.0**f, -(2.0**f), 1.0, -1.0, 0.0, 0.0]
    if f == 24:  # 1/ulp is outside the f = 24 domain: check the rest
        got, want = got[3:], want[3:]
    np.testing.assert_allclose(got, want, atol=3 * ulp, rtol=3 * ulp)
    np.testing.assert_array_equal(run(fn.sqrt, fp, exact(fp, [0.0, -1.0, -top(f)]))[0], zeros)
    np.testing.assert_array_equal(run(fn.rsqrt, fp, exact(fp, [0.0, -1.0, -top(f)]))[0], zeros)
    np.testing.assert_allclose(run(fn.log, fp, exact(fp, [0.0, -1.0, -top(f)]))[0], zeros, atol=2 * ulp)
    np.testing.assert_array_equal(run(fn.divide, fp, exact(fp, [1.0, -5.0, 0.0]), zeros)[0], zeros)
    np.testing.assert_allclose(
        run(fn.log, fp, exact(fp, [1.0, 2.0, ulp]))[0], [0, math.log(2), -f * math.log(2)], atol=3 * ulp
    )
    big = 2.0 ** (57 - 2 * f) * 0.99
    np.testing.assert_allclose(run(fn.exp, fp, exact(fp, [0.0, -big, -50.0]))[0], [1.0, 0.0, 0.0], atol=3 * ulp)
    np.testing.assert_allclose(run(fn.sigmoid, fp, exact(fp, [0.0, big, -big]))[0], [0.5, 1.0, 0.0], atol=3 * ulp)


def test_shapes_are_kept() -> None:
    fp = FixedPoint(16)
    x = exact(fp, np.arange(1, 13, dtype=np.float64).reshape(3, 4))
    got, _ = run(fn.divide, fp, x, x.T.reshape(3, 4))
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, x / x.T.reshape(3, 4), rtol=1e-4)
    got, _ = run(fn.log, fp, x)
    assert got.shape == (3, 4)


def test_frac_bits_outside_supported_range() -> None:
    with pytest.raises(ValueError, match="8 <= f <= 28"):
        run(fn.reciprocal, FixedPoint(30), np.ones(2))


def test_iterations_grow_with_precision() -> None:
    steps = [fn.newton_steps(0.0718, 1.0, f) for f in (8, 16, 24, 28)]
    assert steps == sorted(steps) and steps[0] < steps[-1]
    degrees = [len(fn.poly_coefficients("log_mant", f)) for f in (8, 16, 24, 28)]
    assert degrees == sorted(degrees) and degrees[0] < degrees[-1]


# ---------------------------------------------------------------------------------------------
# hypothesis: random values over each domain, both precisions


def log_uniform(lo: float, hi: float, signed: bool = False) -> st.SearchStrategy[float]:
    mag = st.floats(math.log2(lo), math.log2(hi)).map(lambda t: 2.0**t)
    if not signed:
        return mag
    return st.tuples(mag, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])


@given(st.sampled_from(FS), st.data())
def test_reciprocal_and_divide_property(f: int, data: st.DataObject) -> None:
    fp = FixedPoint(f)
    y = exact(fp, data.draw(st.lists(log_uniform(recip_lo(f), top(f), signed=True), min_size=1, max_size=20)))
    got, _ = run(fn.reciprocal, fp, y)
    assert scaled_error(fp, got, 1 / y) <= TOL_ULPS
    q = np.array(
        data.draw(st.lists(log_uniform(2.0**-30, result_max(f), signed=True), min_size=len(y), max_size=len(y)))
    )
    x = exact(fp, np.clip(q * y, -top(f), top(f)))
    got, _ = run(fn.divide, fp, x, y)
    assert scaled_error(fp, got, x / y) <= TOL_DIVIDE


@given(st.sampled_from(FS), st.data())
def test_sqrt_rsqrt_log_property(f: int, data: st.DataObject) -> None:
    fp = FixedPoint(f)
    x = exact(
        fp, data.draw(st.lists(log_uniform(2.0**-f, min(top(f), result_max(f) ** 2 * 0.99)), min_size=1, max_size=20))
    )
    x = x[x > 2.0 ** (4 * f - 122)]
    both = np.concatenate([x, x, x])
    sq, _ = run(fn.sqrt, fp, both)
    assert scaled_error(fp, sq, np.sqrt(both)) <= TOL_ULPS
    rs, _ = run(fn.rsqrt, fp, x)
    assert scaled_error(fp, rs, 1 / np.sqrt(x)) <= TOL_ULPS
    lg, _ = run(fn.log, fp, x)
    assert np.max(np.abs(lg - np.log(x)), initial=0.0) <= TOL_ULPS / fp.scale


@given(st.sampled_from(FS), st.data())
def test_exp_sigmoid_property(f: int, data: st.DataObject) -> None:
    fp = FixedPoint(f)
    upper = min(61 - 2 * f, 32) * math.log(2) * 0.999
    x = exact(fp, data.draw(st.lists(st.floats(-3 * upper, upper), min_size=1, max_size=20)))
    got, _ = run(fn.exp, fp, x)
    assert scaled_error(fp, got, np.exp(x)) <= TOL_ULPS
    wide = exact(
        fp, data.draw(st.lists(st.floats(-(2.0 ** (57 - 2 * f)) * 0.99, 2.0 ** (57 - 2 * f) * 0.99), min_size=1))
    )
    s = np.concatenate([x, -x, wide])
    got, _ = run(fn.sigmoid, fp, s)
    assert np.max(np.abs(got - 1 / (1 + np.exp(-np.clip(s, -700, 700))))) <= TOL_ULPS / fp.scale
    np.testing.assert_allclose(got[: len(x)] + got[len(x) : 2 * len(x)], 1.0, atol=TOL_ULPS / fp.scale)


# ---------------------------------------------------------------------------------------------
# normalisation and prefix-OR


@given(st.lists(st.integers(-(2**62) + 1, 2**62 - 1), min_size=1, max_size=30))
def test_prefix_or(values: list[int]) -> None:
    words = np.array(values, dtype=np.int64).view(np.uint64)
    shares = deal(words, np.random.default_rng(0))

    def program(p: Party) -> Protocol[Any]:
        return (yield from prefix_or(p, (yield from a2b(p, shares[p.index]))))

    got, _ = run_in_memory(program)
    want = words.copy()
    for s in (1, 2, 4, 8, 16, 32):
        want |= want >> np.uint64(s)
    np.testing.assert_array_equal(reconstruct_bool(got), want)


@given(st.lists(st.integers(-(2**62) + 1, 2**62 - 1), min_size=1, max_size=30))
def test_normalize(values: list[int]) -> None:
    fp = FixedPoint(16)
    ints = np.array(values, dtype=np.int64)
    shares = deal(ints.view(np.uint64), np.random.default_rng(0))

    def program(p: Party) -> Protocol[Any]:
        nz = yield from fn.normalize(p, shares[p.index], fp, [lambda e: e])
        return AShare.concat([nz.mant, nz.sign, nz.values[0]])

    got, _ = run_in_memory(program)
    mant, sign, e = np.split(reconstruct(got).view(np.int64), 3)
    mags = np.abs(ints).astype(object)
    want_e = np.array(
        [0 if m == 0 else (m - 1).bit_length() if v < 0 else m.bit_length() for m, v in zip(mags, ints, strict=True)]
    )
    np.testing.assert_array_equal(e, np.where(ints == 0, 0, want_e))
    np.testing.assert_array_equal(sign, (ints < 0).astype(np.int64))
    ratio = mant / fp.scale
    nonzero = ints != 0
    assert np.all((np.abs(ratio[nonzero]) >= 0.5) & (np.abs(ratio[nonzero]) <= 1))
    np.testing.assert_allclose(ratio * 2.0 ** (e - 16), ints / fp.scale, rtol=2**-15, atol=2**-16)
