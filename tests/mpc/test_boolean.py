"""Boolean sharing, conversions and comparisons against plaintext numpy."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from site_agent.mpc import boolean as bl
from site_agent.mpc.party import run_in_memory
from site_agent.mpc.shares import AShare
from site_agent.mpc.sharing import reconstruct, reconstruct_bool

from .helpers import run_open, shared

signed62 = arrays(np.int64, st.integers(1, 64), elements=st.integers(-(2**62), 2**62 - 1))
full = arrays(np.int64, st.integers(1, 64), elements=st.integers(-(2**63), 2**63 - 1))
EDGES = [0, 1, -1, 2**62, -(2**62), 2**62 - 1, -(2**62) + 1, 2**63 - 1, -(2**63)]
edgy64 = st.sampled_from(EDGES) | st.integers(-(2**63), 2**63 - 1)
# lt is exact for |x - y| < 2^63: values in [-2^62, 2^62) (so not 2^62 against -2^62).
edgy62 = st.sampled_from([v for v in EDGES if -(2**62) <= v < 2**62]) | st.integers(-(2**62), 2**62 - 1)
words = st.sampled_from([v % 2**64 for v in EDGES] + [2**63 + 2**62, 2**64 - 2**62]) | st.integers(0, 2**64 - 1)


@given(st.lists(st.tuples(words, words), min_size=1, max_size=20))
def test_msb_tree_reference_is_the_top_bit_of_the_sum(pairs: list[tuple[int, int]]) -> None:
    for a, b in pairs:
        assert bl.msb_tree_reference(a, b) == ((a + b) % 2**64) >> 63


@given(st.lists(st.tuples(words, words), min_size=1, max_size=200))
def test_msb_bool_agrees_with_its_reference(pairs: list[tuple[int, int]]) -> None:
    """Shares with chosen a = x_0 + x_1 (member 0's word) and b = x_2 (the others'), so the
    circuit sees the edge words themselves; up to 200 values crosses the padding to 64."""
    a = np.array([v for v, _ in pairs], dtype=np.uint64)
    b = np.array([v for _, v in pairs], dtype=np.uint64)
    x0 = np.random.default_rng(len(pairs)).integers(0, 2**64, len(pairs), dtype=np.uint64)
    comps = [x0, a - x0, b]
    xs = [AShare.from_pair(comps[i], comps[(i + 1) % 3]) for i in range(3)]
    results, stats = run_in_memory(lambda p: bl.msb_bool(p, xs[p.index]))
    expected = [bl.msb_tree_reference(int(u), int(v)) for u, v in pairs]
    assert reconstruct_bool(results).tolist() == expected
    assert [s.rounds for s in stats] == [6, 6, 6]


@given(arrays(np.int64, st.integers(1, 150), elements=edgy64))
def test_ltz_on_every_signed_word(x: np.ndarray) -> None:
    xs = shared(x, seed=14)
    assert np.array_equal(run_open(lambda p: bl.ltz(p, xs[p.index])), (x < 0).astype(np.uint64))


@given(arrays(np.int64, st.integers(1, 150), elements=edgy62), st.data())
def test_lt_on_edge_values(x: np.ndarray, data: st.DataObject) -> None:
    y = data.draw(arrays(np.int64, len(x), elements=edgy62))
    y[::4] = x[::4]  # ties
    xs, ys = shared(x, seed=15), shared(y, seed=16)
    assert np.array_equal(run_open(lambda p: bl.lt(p, xs[p.index], ys[p.index])), (x < y).astype(np.uint64))


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
        assert [s.rounds for s in stats] == [7, 7, 7]


def test_comparison_words_per_value() -> None:
    """Member 0: 3 (level 1) + 61/64 (levels 2 to 6) + 2 (injection); the others 1 + 61/64 + 1."""
    n = 64 * 100
    xs, ys = shared(np.arange(n), seed=12), shared(np.arange(n)[::-1], seed=13)
    _, stats = run_in_memory(lambda p: bl.lt(p, xs[p.index], ys[p.index]))
    assert [s.words_sent * 64 for s in stats] == [381 * n, 189 * n, 189 * n]
