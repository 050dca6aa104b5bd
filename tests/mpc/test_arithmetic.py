"""Arithmetic protocols against plaintext numpy (exact for integers, < 1 ulp for fixed point)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from site_agent.mpc import arithmetic as ar
from site_agent.mpc.fixed import FixedPoint
from site_agent.mpc.party import run_in_memory
from site_agent.mpc.sharing import reconstruct

from .helpers import exact_fixed_product, run_open, shared

FP = FixedPoint()
ints = arrays(np.int64, st.integers(1, 40), elements=st.integers(-(2**40), 2**40))


@given(ints, st.integers(0, 2**32))
def test_linear_ops_are_exact(x: np.ndarray, c: int) -> None:
    xs, ys = shared(x, seed=1), shared(x[::-1], seed=2)
    out = run_open(lambda p: _const((xs[p.index] + ys[p.index]).mul_public(c) - xs[p.index]))
    assert np.array_equal(out.view(np.int64), (x + x[::-1]) * c - x)


def _const(v):  # a protocol with no rounds
    return v
    yield  # pragma: no cover


@given(ints)
def test_mul_matches_numpy(x: np.ndarray) -> None:
    y = (x[::-1] % 1000) - 500
    xs, ys = shared(x, seed=3), shared(y, seed=4)
    out = run_open(lambda p: ar.mul(p, xs[p.index], ys[p.index]))
    assert np.array_equal(out.view(np.int64), x * y)


def test_matmul_and_dot() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(-1000, 1000, size=(4, 7))
    b = rng.integers(-1000, 1000, size=(7, 3))
    xs, ys = shared(a, seed=6), shared(b, seed=7)
    out = run_open(lambda p: ar.matmul(p, xs[p.index], ys[p.index]))
    assert np.array_equal(out.view(np.int64), a @ b)
    v = shared(a[0], seed=8)
    dot = run_open(lambda p: ar.matmul(p, v[p.index], v[p.index]))
    assert int(dot.view(np.int64)) == int(a[0] @ a[0])


@given(arrays(np.float64, st.integers(1, 60), elements=st.floats(-30000, 30000)))
def test_mul_fixed_is_floor_or_floor_plus_one(x: np.ndarray) -> None:
    y = np.cos(x) * 1000
    ex, ey = FP.encode(x), FP.encode(y)
    xs, ys = shared(x, FP, seed=9), shared(y, FP, seed=10)
    out = run_open(lambda p: ar.mul_fixed(p, xs[p.index], ys[p.index], FP.frac_bits))
    diff = out.view(np.int64).astype(object) - exact_fixed_product(ex, ey, FP.frac_bits)
    assert set(diff.tolist()) <= {0, 1}


def test_truncation_exact_up_to_two_to_the_62() -> None:
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.integers(-(2**62), 2**62, size=5000), [2**62 - 1, -(2**62), 0, -1, 1]])
    xs = shared(x, seed=12)
    for bits in (1, 16, 40, 62):
        out = run_open(lambda p, b=bits: ar.trunc(p, xs[p.index], b)).view(np.int64)
        diff = out - (x >> bits)
        assert set(np.unique(diff).tolist()) <= {0, 1}, bits


def test_truncation_rounding_is_unbiased() -> None:
    x = np.full(20000, 3)  # 3 / 4 = 0.75: floor 0, so about 75% should round up
    xs = shared(x, seed=13)
    out = run_open(lambda p: ar.trunc(p, xs[p.index], 2)).view(np.int64)
    assert abs(out.mean() - 0.75) < 0.02


def test_truncation_bounds_are_checked() -> None:
    xs = shared(np.array([1]), seed=14)
    with pytest.raises(ValueError, match=r"^truncation by 0 bits is outside \[1, 62\]$"):
        run_in_memory(lambda p: ar.trunc(p, xs[p.index], 0))


def test_matmul_fixed() -> None:
    rng = np.random.default_rng(15)
    a, b = rng.normal(size=(5, 8)) * 10, rng.normal(size=(8, 2)) * 10
    xs, ys = shared(a, FP, seed=16), shared(b, FP, seed=17)
    out = FP.decode(run_open(lambda p: ar.matmul_fixed(p, xs[p.index], ys[p.index], FP.frac_bits)))
    ref = FP.decode(FP.encode(a)) @ FP.decode(FP.encode(b))
    assert np.max(np.abs(out - ref)) <= 2.0**-FP.frac_bits


def test_input_from_each_owner_and_open() -> None:
    values = np.arange(10, dtype=np.int64) - 3

    def prog(p):
        got = []
        for owner in range(3):
            mine = (values * (owner + 1)).view(np.uint64) if p.index == owner else None
            got.append((yield from ar.input_from(p, owner, mine, (10,))))
        total = got[0] + got[1] + got[2]
        opened = yield from ar.open_all(p, total)
        to_two = yield from ar.open_to(p, total, 2)
        return opened, to_two

    results, stats = run_in_memory(prog)
    for opened, _ in results:
        assert np.array_equal(opened.view(np.int64), values * 6)
    assert results[0][1] is None and results[1][1] is None
    assert np.array_equal(results[2][1].view(np.int64), values * 6)
    assert all(s.rounds >= 4 for s in stats)


def test_public_constants() -> None:
    xs = shared(np.array([5, -7]), seed=18)
    out = run_open(lambda p: _const(ar.add_public(p, xs[p.index], np.array([10, 10], dtype=np.uint64))))
    assert out.view(np.int64).tolist() == [15, 3]
    assert run_open(lambda p: _const(ar.constant(p, [4, 2**63], ar.AShare))).tolist() == [4, 2**63]


def test_same_seed_same_shares_and_different_seed_different_shares() -> None:
    xs, ys = shared(np.arange(100), seed=19), shared(np.arange(100), seed=20)
    prog = lambda p: ar.mul(p, xs[p.index], ys[p.index])  # noqa: E731
    a, _ = run_in_memory(prog, seed=1)
    b, _ = run_in_memory(prog, seed=1)
    c, _ = run_in_memory(prog, seed=2)
    assert all(np.array_equal(s.v, t.v) for s, t in zip(a, b, strict=True))
    assert not np.array_equal(a[0].v, c[0].v)
    assert np.array_equal(reconstruct(a), reconstruct(c))


@given(st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)))
def test_input_all_in_one_round(sizes: tuple[int, int, int]) -> None:
    vals = [np.arange(n, dtype=np.uint64) * np.uint64(o + 1) + np.uint64(7) for o, n in enumerate(sizes)]
    results, stats = run_in_memory(lambda p: ar.input_all(p, vals[p.index], sizes))
    for o in range(3):
        assert np.array_equal(reconstruct([r[o] for r in results]), vals[o])
    assert all(s.rounds == 1 for s in stats)


def test_input_sum_shares_the_sum_in_one_round_sending_one_vector_each() -> None:
    """Only the sum of the members' vectors is shared: half the words of input_all."""
    vals = [np.arange(5, dtype=np.uint64) * np.uint64(o + 1) + np.uint64(2**63 + o) for o in range(3)]
    results, stats = run_in_memory(lambda p: ar.input_sum(p, vals[p.index]))
    assert np.array_equal(reconstruct(results), vals[0] + vals[1] + vals[2])
    assert all(s.rounds == 1 and s.words_sent == 5 for s in stats)
    assert not any(np.array_equal(r.v[1], vals[(i + 1) % 3]) for i, r in enumerate(results))  # masked


def test_input_all_checks_the_size() -> None:
    with pytest.raises(ValueError, match="the plan expects"):
        run_in_memory(lambda p: ar.input_all(p, np.zeros(2, dtype=np.uint64), (3, 3, 3)))


def test_inputs_and_openings_keep_shapes_and_take_python_integers() -> None:
    """Owners may pass plain lists; shares and opened values keep a matrix's shape."""
    matrix = [[1, 2, 3], [4, 5, 2**63]]

    def prog(p):
        x = yield from ar.input_from(p, 1, matrix if p.index == 1 else None, (2, 3))
        y = ar.add_public(p, x, 7)
        everyone = yield from ar.open_all(p, y)
        member_0 = yield from ar.open_to(p, y, 0)
        return x, everyone, member_0

    results, _ = run_in_memory(prog)
    expected = np.array(matrix, dtype=np.uint64) + np.uint64(7)
    assert reconstruct([r[0] for r in results]).shape == (2, 3)
    for _, everyone, _ in results:
        np.testing.assert_array_equal(everyone, expected)
    np.testing.assert_array_equal(results[0][2], expected)
    assert results[1][2] is None and results[2][2] is None
    results, _ = run_in_memory(lambda p: ar.input_all(p, [p.index + 1, 10], (2, 2, 2)))
    assert [reconstruct([r[o] for r in results]).tolist() for o in range(3)] == [[1, 10], [2, 10], [3, 10]]


def test_input_product_is_member_0s_input_times_what_1_and_2_know() -> None:
    t, c = [3, 4, 5], np.array([100, 200, 300], dtype=np.uint64)

    def times_two(v: np.ndarray) -> np.ndarray:
        return v * np.uint64(2)

    def prog(p):
        if p.index == 0:
            return (yield from ar.input_product(p, t, 3, 3))
        return (yield from ar.input_product(p, None, 3, 3, times_two, c))

    results, stats = run_in_memory(prog)
    shares = [ar.AShare.from_pair(*r) for r in results]
    assert reconstruct(shares).tolist() == [106, 208, 310]
    assert all(s.rounds == 1 for s in stats)


@pytest.mark.parametrize(
    ("member", "args", "says"),
    [
        (0, (None, 3, 3), "member 0 must supply the values it inputs"),
        (0, ([1, 2], 3, 3), "input has 2 elements, expected 3"),
        (1, (None, 3, 3, lambda v: v, None), "members 1 and 2 must supply the linear map and the constant"),
        (
            2,
            (None, 3, 3, None, np.zeros(3, dtype=np.uint64)),
            "members 1 and 2 must supply the linear map and the constant",
        ),
    ],
)
def test_input_product_checks_its_arguments(member: int, args: tuple, says: str) -> None:
    from site_agent.mpc.party import Party
    from site_agent.mpc.randomness import Randomness

    with pytest.raises(ValueError, match=f"^{says}$"):
        next(ar.input_product(Party(member, Randomness.from_seed(member, 0)), *args))


@pytest.mark.parametrize(
    ("values", "says"),
    [(None, "the owner must supply the values it inputs"), ([1, 2], "input has 2 elements, expected 3")],
)
def test_input_checks_the_owners_values(values: list[int] | None, says: str) -> None:
    from site_agent.mpc.party import Party
    from site_agent.mpc.randomness import Randomness

    with pytest.raises(ValueError, match=f"^{says}$"):
        next(ar.input_from(Party(2, Randomness.from_seed(2, 0)), 2, values, (3,)))


def test_products_broadcast_like_numpy() -> None:
    col, row = np.arange(1, 4).reshape(3, 1), np.arange(10, 14).reshape(1, 4)
    xs, ys = shared(col, seed=30), shared(row, seed=31)
    out = run_open(lambda p: ar.mul(p, xs[p.index], ys[p.index]))
    np.testing.assert_array_equal(out.view(np.int64), col * row)


def test_truncation_sends_what_the_module_docstring_says() -> None:
    """trunc: member 0 sends member 2 2n words, member 2 sends member 1 2n, member 1 sends
    member 2 n (member 1 holds nothing to add in the first round)."""
    n = 50
    xs = shared(np.arange(n) << 20, seed=32)
    results, stats = run_in_memory(lambda p: ar.trunc(p, xs[p.index], 16))
    np.testing.assert_array_equal(reconstruct(results).view(np.int64) >> 0, np.arange(n) << 4)
    assert [s.words_sent for s in stats] == [2 * n, n, 2 * n]


def test_truncation_range_is_named() -> None:
    xs = shared(np.arange(3), seed=33)
    for bits in (0, 63):
        with pytest.raises(ValueError, match=rf"^truncation by {bits} bits is outside \[1, 62\]$"):
            run_in_memory(lambda p, bits=bits: ar.trunc(p, xs[p.index], bits))
