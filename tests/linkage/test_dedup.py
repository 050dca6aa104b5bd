"""Distinct persons and persons per number of sites on shares, against pandas on the pooled keys;
the release rule; and what a member sees does not depend on which keys match."""

from __future__ import annotations

from collections import Counter
from itertools import permutations

import numpy as np
import pandas as pd
import pytest

from site_agent.errors import ProtocolViolation
from site_agent.linkage import dedup
from site_agent.mpc.party import Party, Protocol, run_in_memory
from site_agent.mpc.sharing import deal

from ..mpc.test_views import ALPHA, affine_relations, collect, position_p_value, runs_for


def pandas_counts(site_keys: list[np.ndarray]) -> list[int]:
    """Distinct persons and persons at exactly 1, 2 and 3+ sites, from the pooled keys."""
    pooled = pd.DataFrame(
        {"key": np.concatenate(site_keys), "site": np.repeat(np.arange(len(site_keys)), [len(k) for k in site_keys])}
    ).drop_duplicates()
    per_person = pooled.groupby("key")["site"].nunique()
    return [
        int(pooled["key"].nunique()),
        int((per_person == 1).sum()),
        int((per_person == 2).sum()),
        int((per_person >= 3).sum()),
    ]


def mixed(values: list[int] | np.ndarray) -> np.ndarray:
    """Small integers as pseudorandom 64-bit keys (what the OPRF gives): the splitmix64 finaliser."""
    z = np.asarray(values, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def secure(site_keys: list[np.ndarray], k: int = 1) -> list[int | None]:
    shares = dedup.deal_sites(site_keys, np.random.default_rng(5))
    results, _ = run_in_memory(lambda p: dedup.linked_counts(p, *shares[p.index], len(site_keys), k), seed=7)
    assert results[0] == results[1] == results[2]
    return results[0].values


def overlapping(persons: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**64, size=persons, dtype=np.uint64)
    return [ids[rng.random(persons) < 0.45] for _ in range(3)]


@pytest.mark.parametrize("seed", [1, 2])
def test_counts_equal_pandas_on_the_pooled_keys(seed: int) -> None:
    site_keys = overlapping(4000, seed)
    expected = pandas_counts(site_keys)
    assert expected[2] > 0 and expected[3] > 0
    assert secure(site_keys) == expected


def test_keys_sharing_a_prefix_are_still_counted_exactly() -> None:
    # Pairs of persons whose keys agree on every bit the sort looks at and differ below it: the
    # sort interleaves them by position, and the window of equalities must still find each
    # person's copies. Each person is at one, two or three sites, in every combination.
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**62, size=300, dtype=np.uint64) << np.uint64(2)
    a, b = base, base | np.uint64(1)  # same top bits, different keys
    sites = [[] for _ in range(3)]
    for i in range(300):
        for key, where in ((a[i], (0, 1, 2)[: 1 + i % 3]), (b[i], (2, 1, 0)[: 1 + (i // 3) % 3])):
            for s in where:
                sites[s].append(key)
    site_keys = [np.array(s, dtype=np.uint64) for s in sites]
    assert secure(site_keys) == pandas_counts(site_keys)


def test_duplicates_within_a_site_count_once() -> None:
    site_keys = [mixed([5, 5, 6]), mixed([6, 7]), mixed([6])]
    assert secure(site_keys) == pandas_counts(site_keys) == [3, 2, 0, 1]


def test_two_sites() -> None:
    site_keys = [mixed(np.arange(0, 60)), mixed(np.arange(40, 100))]
    shares = dedup.deal_sites(site_keys)
    results, _ = run_in_memory(lambda p: dedup.linked_counts(p, *shares[p.index], 2, 5))
    assert results[0].as_dict() == {"distinct persons": 100, "at 1 site": 80, "at 2+ sites": 20}


def test_release_rule_withholds_the_parts_together() -> None:
    # 3 persons at three sites: below k = 5, so every part is withheld (the other parts and the
    # total would give it away); the total (well above k) is released.
    site_keys = overlapping(400, 4)
    site_keys = [np.setdiff1d(k, _at_three(site_keys)[3:]) for k in site_keys]  # leave exactly 3 at 3 sites
    truth = pandas_counts(site_keys)
    assert truth[3] == 3
    assert secure(site_keys, k=5) == [truth[0], None, None, None]
    assert secure(site_keys, k=3) == truth


def _at_three(site_keys: list[np.ndarray]) -> np.ndarray:
    counts = Counter(np.concatenate(site_keys).tolist())
    return np.array(sorted(k for k, c in counts.items() if c == 3), dtype=np.uint64)


RUNS = 960  # 40 per permutation of 4


@pytest.mark.parametrize("keys", [[7, 7, 7, 8], [1, 2, 3, 4], [5, 9, 5, 9]])
def test_opened_arrangement_is_uniform_whatever_matches(keys: list[int]) -> None:
    # Everything the sort opens is a function of the arrangement. Four keys from three sites:
    # one person at three sites, no match at all, two persons at two sites each.
    counts: Counter[tuple[int, ...]] = Counter()
    plain = np.array(keys, dtype=np.uint64) << np.uint64(40)
    for run in range(RUNS):
        keys_sh = deal(plain, np.random.default_rng([11, run]))
        pre_sh = deal(plain >> np.uint64(64 - dedup.prefix_bits(4)), np.random.default_rng([12, run]))
        results, _ = run_in_memory(lambda p, k=keys_sh, s=pre_sh: dedup.sort_keys(p, k[p.index], s[p.index]), seed=run)
        counts[tuple(results[0][1].tolist())] += 1
    expected = RUNS / 24
    chi2 = sum((counts.get(c, 0) - expected) ** 2 / expected for c in permutations(range(4)))
    assert chi2 < 23 + 6 * np.sqrt(2 * 23)  # 6 sigma above the mean of chi2(23)


def _tally(p: Party, x, y, plain):  # type: ignore[no-untyped-def]
    return dedup.tally(p, x, 3)


def test_tally_view_does_not_depend_on_which_keys_match() -> None:
    # Sorted keys with no match against a person at three sites and one at two: every word a
    # member holds or receives in the equalities and comparisons has one distribution, for
    # each of the three members (test_views.py's checks 1 and 2).
    none = mixed([1, 2, 3, 4, 5, 6])
    some = mixed([1, 1, 1, 4, 4, 6])
    zero = np.zeros(6, dtype=np.uint64)
    runs = runs_for(max(v.words.shape[1] for v in collect(_tally, (none, zero), 1, 0)))
    a = collect(_tally, (none, zero), runs, 100)
    b = collect(_tally, (some, zero), runs, 200)
    for member in (0, 1, 2):
        assert position_p_value(a[member].words, b[member].words) > ALPHA
        assert affine_relations(a[member].words) == affine_relations(b[member].words) == 0


def test_members_holding_data_input_their_own_keys() -> None:
    site_keys = dedup.synthetic_sites(600, 9)
    results, _ = run_in_memory(lambda p: dedup.committee_counts(p, site_keys[p.index], 3, 5))
    assert results[0].values == pandas_counts(site_keys) == [1320, 900, 360, 60]


def test_a_member_without_data_inputs_no_keys() -> None:
    # Two hospitals and a neutral third member: the window is that of two sites.
    site_keys = [mixed(np.arange(0, 60)), mixed(np.arange(40, 100)), np.zeros(0, dtype=np.uint64)]
    results, _ = run_in_memory(lambda p: dedup.committee_counts(p, site_keys[p.index], 2, 5))
    assert results[0].as_dict() == {"distinct persons": 100, "at 1 site": 80, "at 2+ sites": 20}


def test_an_oversized_announcement_is_refused() -> None:
    site_keys = dedup.synthetic_sites(50, 9)
    with pytest.raises(ProtocolViolation):
        run_in_memory(lambda p: dedup.committee_counts(p, site_keys[p.index], 3, 5, max_keys=40))


def test_batches_give_the_same_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many keys go through the equalities and comparisons in several batches (smaller messages).
    monkeypatch.setattr(dedup, "BATCH", 1000)
    site_keys = dedup.synthetic_sites(2000, 3)
    results, _ = run_in_memory(lambda p: dedup.committee_counts(p, site_keys[p.index], 3, 5))
    assert results[0].values == pandas_counts(site_keys) == [4400, 3000, 1200, 200]


@pytest.mark.parametrize(
    ("differences", "withheld"),
    [
        ([[], [], []], False),  # nothing remembered
        ([[0, 40], [0, 40], [0, 0]], False),  # 80 records apart from the second set: no person isolated
        ([[1, 40], [1, 40], [0, 0]], True),  # one person at two sites apart from the first set
        ([[4, 0], [4, 0], [4, 0]], True),  # 12 records: possibly 4 persons at three sites each (k = 5)
        ([[5, 0], [4, 0], [4, 0]], False),  # 13 records: at least 5 persons
    ],
)
def test_the_ledger_withholds_every_count_when_a_difference_could_isolate_persons(
    differences: list[list[int]], withheld: bool
) -> None:
    site_keys = dedup.synthetic_sites(600, 9)

    def program(p: Party) -> Protocol[dedup.Linked]:
        mine = np.asarray(differences[p.index], dtype=np.uint64)
        kept, flags = yield from dedup.committee_release(p, site_keys[p.index], 3, 5, differences=mine, ledger_k=13)
        return (yield from dedup.open_linked(p, kept, flags, 3))

    results, _ = run_in_memory(program)
    assert results[0].values == ([None] * 4 if withheld else pandas_counts(site_keys))
