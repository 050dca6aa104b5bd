"""The shuffle sort: its layers against the plain reference, numpy, and what it opens.

The last tests are written from a member's side: everything the sort opens is a function
of the public arrangement it returns, so that arrangement must be a uniformly random
permutation of each row whatever the data (ties included), and what a member receives
otherwise must look uniform.
"""

from collections import Counter
from itertools import permutations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from site_agent.mpc import samplesort
from site_agent.mpc.arithmetic import add_public
from site_agent.mpc.fixed import FixedPoint, decode_int
from site_agent.mpc.party import run_in_memory
from site_agent.mpc.shares import AShare
from site_agent.mpc.sharing import deal, reconstruct
from site_agent.mpc.shuffle import shuffle

from .helpers import run_open, shared

FP = FixedPoint()
distinct = st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=60, unique=True)


def _arrangement(keys: list[int], pivots: int, wanted: list[int] | None) -> np.ndarray:
    ks = shared(np.array(keys).reshape(1, -1), seed=11)
    counts = np.array([len(keys)])
    w = None if wanted is None else np.array(wanted, dtype=np.intp)
    results, _ = run_in_memory(lambda p: samplesort.sort_shuffled(p, ks[p.index], counts, w, pivots))
    assert all(np.array_equal(r, results[0]) for r in results)  # every member arranges alike
    return results[0]


@given(distinct, st.sampled_from([1, 2, 3, 7]), st.data())
def test_layers_arrange_as_the_reference(keys: list[int], pivots: int, data: st.DataObject) -> None:
    wanted = data.draw(st.none() | st.lists(st.integers(0, len(keys) - 1), min_size=1, max_size=3))
    want, _ = samplesort.sort_reference(keys, pivots, wanted)
    got = _arrangement(keys, pivots, wanted)
    assert got.tolist() == want
    ranks = range(len(keys)) if wanted is None else wanted
    assert [keys[got[r]] for r in ranks] == [sorted(keys)[r] for r in ranks]  # and they sort


def test_reference_counts_comparisons_like_quicksort() -> None:
    keys = np.random.default_rng(0).permutation(2000).tolist()
    _, compared = samplesort.sort_reference(keys, 1)
    assert 2000 * np.log2(2000) < compared < 3 * 2000 * np.log(2000)  # about 2 n ln n
    _, selected = samplesort.sort_reference(keys, 7, [1000])
    assert selected < 12 * 2000  # a selection is linear


@pytest.mark.parametrize("pivots", [1, 3, 7])
def test_sort_rows_with_counts_and_ranks(pivots: int) -> None:
    rng = np.random.default_rng(12)
    x = rng.integers(-5, 5, size=(2, 3, 50))  # many ties
    counts = rng.integers(1, 51, size=(2, 3))
    xs = shared(x, seed=12)
    got = decode_int(run_open(lambda p: samplesort.sort_rows(p, xs[p.index], counts, pivots=pivots)))
    for r in np.ndindex(2, 3):
        c = counts[r]
        assert np.array_equal(got[r][:c], np.sort(x[r][:c]))
        assert np.array_equal(got[r][c:], x[r][c:])  # padding stays in place
    ranks = np.stack([np.zeros_like(counts), counts // 2, counts - 1], axis=-1)
    sel = decode_int(run_open(lambda p: samplesort.sort_rows(p, xs[p.index], counts, ranks, pivots)))
    for r in np.ndindex(2, 3):
        assert np.array_equal(sel[r][ranks[r]], np.sort(x[r][: counts[r]])[ranks[r]])


def test_sorts_a_large_row_of_reals() -> None:
    x = FP.decode(FP.encode(np.random.default_rng(13).normal(0, 1000, 5000)))
    xs = shared(x, FP, seed=13)
    assert np.array_equal(FP.decode(run_open(lambda p: samplesort.sort_rows(p, xs[p.index]))), np.sort(x))


def test_shuffle_moves_columns_together_and_keeps_padding() -> None:
    rng = np.random.default_rng(14)
    a = rng.integers(0, 2**60, size=(4, 30)).astype(np.uint64)
    counts = np.array([30, 0, 7, 1])
    sa, sb = deal(a), deal(a * np.uint64(3))
    results, _ = run_in_memory(lambda p: shuffle(p, [sa[p.index], sb[p.index]], counts))
    got_a = reconstruct([r[0] for r in results])
    got_b = reconstruct([r[1] for r in results])
    assert np.array_equal(got_b, got_a * np.uint64(3))  # one permutation for both columns
    for row, c in enumerate(counts):
        assert sorted(got_a[row, :c].tolist()) == sorted(a[row, :c].tolist())
        assert np.array_equal(got_a[row, c:], a[row, c:])
    assert not np.array_equal(got_a[0], a[0])


RUNS = 960  # 40 per permutation of 4


@pytest.mark.parametrize("tie_break", [True, False])
@pytest.mark.parametrize("row", [[7, 7, 7, 7], [1, 2, 3, 4], [4, 1, 1, 9]])
def test_opened_arrangement_is_uniform_whatever_the_data(row: list[int], tie_break: bool) -> None:
    # What every member learns is the arrangement (it determines every opened bit). For an
    # all-equal row, an already sorted row and one with a tie, each row of the batch shuffled
    # by its own permutation, it must be uniform over the 24 permutations: a tie or an order
    # in the data must not show. Without the positions in the keys, ties do show.
    xs = shared(np.array([row] * RUNS), seed=15)

    def program(p):  # type: ignore[no-untyped-def]
        keys = xs[p.index].lshift(2)
        if tie_break:
            keys = add_public(p, keys, np.broadcast_to(np.arange(4, dtype=np.uint64), (RUNS, 4)))
        (shuffled,) = yield from shuffle(p, [keys])
        return (yield from samplesort.sort_shuffled(p, shuffled, np.full(RUNS, 4), None, 1))

    results, _ = run_in_memory(program, seed=15)
    arrangements = results[0].reshape(RUNS, 4) - 4 * np.arange(RUNS)[:, None]
    seen = Counter(tuple(a) for a in arrangements.tolist())
    expected = RUNS / 24
    chi2 = sum((seen.get(c, 0) - expected) ** 2 / expected for c in permutations(range(4)))
    uniform = chi2 < 23 + 6 * np.sqrt(2 * 23)  # 6 sigma above the mean of chi2(23)
    assert uniform == (tie_break or len(set(row)) == 4)


@pytest.mark.parametrize("member", [0, 1, 2])
def test_what_a_member_receives_looks_uniform(member: int) -> None:
    n = 3000
    views = []
    for x in (np.zeros(n), np.linspace(-3000, 3000, n)):
        xs = deal(FP.encode(x), np.random.default_rng(1))
        seen: list[np.ndarray] = []

        def tap(sender: int, receiver: int, msg: np.ndarray, seen: list[np.ndarray] = seen) -> None:
            if receiver == member:
                seen.append(msg)

        run_in_memory(lambda p, xs=xs: _sorted_first(p, xs[p.index]), seed=3, tap=tap)
        views.append(np.concatenate(seen))
    for v in views:
        assert np.all(np.abs(bit_frequencies(v) - 0.5) < 6 * 0.5 / np.sqrt(v.size))


def bit_frequencies(words: np.ndarray) -> np.ndarray:
    """The share of ones at each of the 64 bit positions of ``words``."""
    bits = (words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    return bits.mean(axis=0)


def _sorted_first(p, x: AShare):  # type: ignore[no-untyped-def]
    s = yield from samplesort.sort_rows(p, x)
    return s.v[0]
