"""The release rule's core test on shares (``privacy.checks.stopped`` and ``ledger_stops``)
against a plain numpy statement of the rule, on random counts around the threshold: both of its
paths (few 0/1 tests combined by products; sums compared with 1 when there are flags, remembered
sets or many tests), per-check thresholds (``check_k``), and the empty-support flags."""

from __future__ import annotations

import numpy as np
import pytest

from site_agent.mpc.shares import AShare
from site_agent.mpc.sharing import reconstruct
from site_agent.privacy.checks import few_sites, ledger_stops, stopped

from ..mpc.helpers import run_open, shared

K = 5


def _bad(x: np.ndarray, k: int) -> np.ndarray:
    """A count that stops a cell: 1 to k-1, or negative (a site's failure penalty)."""
    return ((x >= 1) & (x < k)) | (x < 0)


def reference(
    checks: list[list[np.ndarray]],
    strict: list[list[np.ndarray]],
    flags: list[list[np.ndarray]],
    support: np.ndarray,
    extra: np.ndarray | None,
    sets: list[list[int]],
    check_k: list[list[int]] | None,
    extra_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The rule as the module docstring states it, row by row."""
    rows = []
    for r, row in enumerate(checks):
        ks = check_k[r] if check_k is not None else [K] * len(row)
        stop = np.zeros(support.shape[1], dtype=bool)
        for c, k in zip(row, ks, strict=True):
            stop |= _bad(c, k)
        for s in strict[r]:
            stop |= s < K
        for f in flags[r]:
            stop |= f > 0
        if extra is not None:
            for j in sets[r]:
                stop |= _bad(extra[j], extra_k or K).any(axis=1)
        rows.append(stop)
    return np.array(rows, dtype=np.int64), (support == 0).astype(np.int64)


def _run_stopped(
    checks: list[list[np.ndarray]],
    strict: list[list[np.ndarray]],
    flags: list[list[np.ndarray]],
    support: np.ndarray,
    extra: np.ndarray | None = None,
    sets: list[list[int]] | None = None,
    check_k: list[list[int]] | None = None,
    extra_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    seed = iter(range(1000))

    def deal_all(rows: list[list[np.ndarray]]) -> list[list[list[AShare]]]:
        return [[shared(x, seed=next(seed)) for x in row] for row in rows]

    c, s, f = deal_all(checks), deal_all(strict), deal_all(flags)
    sup = shared(support, seed=next(seed))
    ext = shared(extra, seed=next(seed)) if extra is not None else None

    def program(p):  # type: ignore[no-untyped-def]
        stop, empty = yield from stopped(
            p,
            [[x[p.index] for x in row] for row in c],
            [[x[p.index] for x in row] for row in s],
            [[x[p.index] for x in row] for row in f],
            K,
            sup[p.index],
            None if ext is None else ext[p.index],
            sets or [[] for _ in checks],
            check_k,
            extra_k,
        )
        return AShare.concat([stop.reshape(-1), empty.reshape(-1)])

    out = run_open(program).view(np.int64)
    rows, cells = len(checks), support.shape[1]
    return out[: rows * cells].reshape(rows, cells), out[rows * cells :].reshape(support.shape)


def _counts(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Counts around the threshold: 0, 1..k-1, k, more, and now and then a negative penalty."""
    return rng.choice(np.array([0, 1, 2, K - 1, K, K + 1, 40, -3]), size=cells)


@pytest.mark.parametrize("seed", range(4))
def test_few_tests_by_products_equal_the_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cells = 9
    checks = [[_counts(rng, cells) for _ in range(2)], [_counts(rng, cells)]]
    strict = [[_counts(rng, cells)], []]
    flags: list[list[np.ndarray]] = [[], []]
    support = _counts(rng, cells * 2).reshape(2, cells)
    got = _run_stopped(checks, strict, flags, support)
    want = reference(checks, strict, flags, support, None, [[], []], None)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", range(4))
def test_flags_remembered_sets_and_own_thresholds_equal_the_rule(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    cells, m = 7, 3
    checks = [[_counts(rng, cells) for _ in range(3)], [_counts(rng, cells)], [_counts(rng, cells) for _ in range(2)]]
    strict = [[], [_counts(rng, cells)], []]
    flags = [[rng.choice([0, 0, 0, 1, 3], size=cells)], [], [rng.choice([0, 2], size=cells)]]
    support = _counts(rng, 3 * cells).reshape(3, cells)
    extra = rng.choice(np.array([0, 1, K - 1, K, 9, -1]), size=(2, cells, m))
    sets = [[0], [0, 1], []]
    check_k = [[K, 1, K], [1], [K, K]]  # 1: only a negative count stops (what approval leaves)
    got = _run_stopped(checks, strict, flags, support, extra, sets, check_k)
    want = reference(checks, strict, flags, support, extra, sets, check_k)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", range(3))
def test_many_tests_and_strict_counts_per_row_by_products_equal_the_rule(seed: int) -> None:
    """Rows of 1, 5, 8 and 3 tests (several strict counts among them): the product tree pairs
    tests across levels and rows."""
    rng = np.random.default_rng(200 + seed)
    cells = 6
    checks = [
        [_counts(rng, cells)],
        [_counts(rng, cells) for _ in range(3)],
        [_counts(rng, cells) for _ in range(5)],
        [_counts(rng, cells) for _ in range(3)],
    ]
    strict = [[], [_counts(rng, cells) for _ in range(2)], [_counts(rng, cells) for _ in range(3)], []]
    flags: list[list[np.ndarray]] = [[], [], [], []]
    support = _counts(rng, 4 * cells).reshape(4, cells)
    got = _run_stopped(checks, strict, flags, support)
    want = reference(checks, strict, flags, support, None, [[], [], [], []], None)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_remembered_differences_with_their_own_threshold() -> None:
    """``extra_k`` (a linkage statement's ledger: S(k-1) site records) bounds the remembered
    differences only; the counts keep k."""
    rng = np.random.default_rng(300)
    cells, m, extra_k = 5, 2, 3 * (K - 1) + 1
    checks = [[_counts(rng, cells)], [_counts(rng, cells)]]
    extra = rng.choice(np.array([0, 1, K - 1, K, extra_k - 1, extra_k, 20, -1]), size=(2, cells, m))
    support = _counts(rng, 2 * cells).reshape(2, cells)
    no: list[list[np.ndarray]] = [[], []]
    got = _run_stopped(checks, no, no, support, extra, [[0], [1]], None, extra_k)
    want = reference(checks, no, no, support, extra, [[0], [1]], None, extra_k)
    assert np.array_equal(got[0], want[0])


def test_ledger_stops_are_the_remembered_differences_alone() -> None:
    rng = np.random.default_rng(9)
    extra = rng.choice(np.array([0, 1, 2, K - 1, K, 30, -2]), size=(3, 5, 4))
    ext = shared(extra, seed=5)
    got = run_open(lambda p: ledger_stops(p, ext[p.index], K)).view(np.int64)
    assert np.array_equal(got, _bad(extra, K).any(axis=2).astype(np.int64))


def test_a_difference_of_exactly_k_or_none_passes() -> None:
    """The boundary itself: differences of 0 and of k persons never stop; k-1 and 1 do."""
    extra = np.array([[[0, K], [K, 0], [K - 1, 0], [0, 1]]])
    ext = shared(extra, seed=11)
    got = run_open(lambda p: ledger_stops(p, ext[p.index], K)).view(np.int64)
    assert got.tolist() == [[0, 0, 1, 1]]
    assert reconstruct(ext).view(np.int64).tolist() == extra.tolist()


@pytest.mark.parametrize("min_sites", [1, 2, 3])
def test_few_sites_counts_every_site_with_a_row_even_one(min_sites: int) -> None:
    """``min_sites``: a site with a single row in a cell is present; none, absent."""
    rows = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [5, 0, 2], [0, 1, 40]])
    share = shared(rows, seed=21)
    got = run_open(lambda p: few_sites(p, share[p.index], min_sites)).view(np.int64)
    assert got.tolist() == ((rows > 0).sum(axis=1) < min_sites).astype(int).tolist()
