"""Boolean sharing, conversions and comparisons against plaintext numpy."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from site_agent.mpc import boolean as bl
from site_agent.mpc.party import run_in_memory
from site_agent.mpc.sharing import reconstruct, reconstruct_bool

from .helpers import run_open, shared

signed62 = arrays(np.int64, st.integers(1, 64), elements=st.integers(-(2**62), 2**62 - 1))
full = arrays(np.int64, st.integers(1, 64), elements=st.integers(-(2**63), 2**63 - 1))


@given(full)
def test_a2b_and_b2a_round_trip(x: np.ndarray) -> None:
    xs = shared(x, seed=1)

    def prog(p):
        b = yield from bl.a2b(p, xs[p.index])
        a = yield from bl.b2a(p, b)
        return b, a

    results, _ = run_in_memory(prog)
    assert np.array_equal(reconstruct_bool([r[0] for r in results]), x.view(np.uint64))
    assert np.array_equal(reconstruct([r[1] for r in results]), x.view(np.uint64))


@given(full, full)
def test_and_or_xor(x: np.ndarray, y: np.ndarray) -> None:
    n = min(len(x), len(y))
    x, y = x[:n].view(np.uint64), y[:n].view(np.uint64)
    xs, ys = shared(x.view(np.int64), seed=2), shared(y.view(np.int64), seed=3)

    def prog(p):
        bx = yield from bl.a2b(p, xs[p.index])
        by = yield from bl.a2b(p, ys[p.index])
        return (yield from bl.and_(p, bx, by)), (yield from bl.or_(p, bx, by)), bx ^ by, bl.not_(p, bx)

    results, _ = run_in_memory(prog)
    opened = [reconstruct_bool([r[k] for r in results]) for k in range(4)]
    assert np.array_equal(opened[0], x & y)
    assert np.array_equal(opened[1], x | y)
    assert np.array_equal(opened[2], x ^ y)
    assert np.array_equal(opened[3], ~x)


@given(signed62, st.data())
def test_lt_ltz_eq(x: np.ndarray, data: st.DataObject) -> None:
    y = data.draw(arrays(np.int64, len(x), elements=st.integers(-(2**62), 2**62 - 1)))
    y[::3] = x[::3]  # plenty of ties
    xs, ys = shared(x, seed=4), shared(y, seed=5)
    assert np.array_equal(run_open(lambda p: bl.lt(p, xs[p.index], ys[p.index])), (x < y).astype(np.uint64))
    assert np.array_equal(run_open(lambda p: bl.ltz(p, xs[p.index])), (x < 0).astype(np.uint64))
    assert np.array_equal(run_open(lambda p: bl.eq(p, xs[p.index], ys[p.index])), (x == y).astype(np.uint64))


def test_comparison_edge_values() -> None:
    x = np.array([0, -1, 1, 2**62 - 1, -(2**62), 5, 5])
    y = np.array([0, 0, 0, -(2**62), 2**62 - 1, 5, 6])
    xs, ys = shared(x, seed=6), shared(y, seed=7)
    assert run_open(lambda p: bl.lt(p, xs[p.index], ys[p.index])).tolist() == (x < y).astype(int).tolist()
    assert run_open(lambda p: bl.eq(p, xs[p.index], ys[p.index])).tolist() == (x == y).astype(int).tolist()


@given(arrays(np.int64, st.integers(1, 30), elements=st.integers(0, 1)))
def test_select(c: np.ndarray) -> None:
    x, y = np.arange(len(c)) * 7 - 50, -np.arange(len(c)) * 3
    cs, xs, ys = shared(c, seed=8), shared(x, seed=9), shared(y, seed=10)
    out = run_open(lambda p: bl.select(p, cs[p.index], xs[p.index], ys[p.index]))
    assert np.array_equal(out.view(np.int64), np.where(c == 1, x, y))


@given(st.integers(1, 40), st.integers(1, 5), st.integers(0, 10**6))
def test_maximum_and_argmax(k: int, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-20, 20, size=(rows, k))  # small range: many ties, argmax takes the first
    xs = shared(x, seed=11)
    results, _ = run_in_memory(lambda p: bl.maximum(p, xs[p.index]))
    assert np.array_equal(reconstruct([r[0] for r in results]).view(np.int64), x.max(axis=1))
    assert np.array_equal(reconstruct([r[1] for r in results]).view(np.int64), x.argmax(axis=1))


def test_round_counts_are_constant_in_n() -> None:
    for n in (1, 1000):
        xs, ys = shared(np.arange(n), seed=12), shared(np.arange(n)[::-1], seed=13)
        _, stats = run_in_memory(lambda p, xs=xs, ys=ys: bl.lt(p, xs[p.index], ys[p.index]))
        assert max(s.rounds for s in stats) <= 12
