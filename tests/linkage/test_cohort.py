"""Linked cohorts on shares: linked persons, rows and sums against pandas on the pooled rows; the
release rule and the ledger; and what a member sees does not depend on which records match."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from site_agent.errors import LocalStepError, ProtocolViolation
from site_agent.linkage import cohort, dedup
from site_agent.mpc import arithmetic as ar
from site_agent.mpc.party import Party, Protocol, run_in_memory
from site_agent.mpc.shares import AShare

from ..mpc.test_views import ALPHA, affine_relations, collect, position_p_value, runs_for
from .test_dedup import mixed

Rows = list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per site: cohort keys, outcome keys, values


def pandas_linked(sites: Rows) -> list[int]:
    """Linked persons, rows and sum: the pooled outcome rows whose key is in any site's cohort."""
    in_cohort = set(np.concatenate([s[0] for s in sites]).tolist())
    rows = pd.DataFrame({"key": np.concatenate([s[1] for s in sites]), "x": np.concatenate([s[2] for s in sites])})
    linked = rows[rows["key"].isin(in_cohort)]
    return [int(linked["key"].nunique()), len(linked), int(linked["x"].sum())]


def records(site: tuple[np.ndarray, np.ndarray, np.ndarray]) -> cohort.SiteRecords:
    """A site's records for COUNT(*) and SUM(x): the columns 1 and x of its outcome rows."""
    return cohort.site_records(site[0], site[1], [np.ones(site[1].size, dtype=np.int64), site[2]])


def secure(sites: Rows, k: int = 1) -> list[int] | list[None]:
    shares = cohort.deal_sites([records(s) for s in sites], np.random.default_rng(5))
    results, _ = run_in_memory(lambda p: cohort.linked_aggregates(p, shares[p.index], len(sites), k), seed=7)
    assert results[0] == results[1] == results[2]
    return results[0] or [None, None, None]


def registry_and_admissions(persons: int, seed: int) -> Rows:
    """A cohort (registry) at sites 0 and 1 only, admissions at all three, several per person and
    site, values positive and negative; some registry persons have no admission, some admitted
    persons are in no registry."""
    rng = np.random.default_rng(seed)
    ids = mixed(np.arange(persons) + 1000 * seed)
    out = []
    for s in range(3):
        registry = ids[rng.random(persons) < (0.3 if s < 2 else 0.0)]
        seen = ids[rng.random(persons) < 0.5]
        admitted = np.repeat(seen, rng.integers(1, 5, seen.size))
        out.append((np.concatenate([registry, registry[:5]]), admitted, rng.integers(-50, 200, admitted.size)))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_aggregates_equal_pandas_on_the_pooled_rows(seed: int) -> None:
    sites = registry_and_admissions(3000, seed)
    expected = pandas_linked(sites)
    assert 0 < expected[0] < len({*np.concatenate([s[1] for s in sites]).tolist()})
    assert secure(sites) == expected


def test_cohort_at_one_site_outcomes_at_the_others() -> None:
    # The cohort only at site 0, the outcomes only at sites 1 and 2 (none at the cohort's site).
    ids = mixed(np.arange(200))
    sites: Rows = [
        (ids[:100], np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)),
        (np.zeros(0, dtype=np.uint64), np.repeat(ids[50:150], 2), np.arange(200)),
        (np.zeros(0, dtype=np.uint64), ids[90:200], np.ones(110, dtype=np.int64)),
    ]
    assert secure(sites) == pandas_linked(sites) == [50, 110, sum(range(100)) + 10]


def test_keys_sharing_a_prefix_are_still_linked_exactly() -> None:
    # Pairs of persons whose keys agree on every bit the sort looks at: their cohort and outcome
    # records interleave, and the window must still find each outcome's cohort record.
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**62, size=200, dtype=np.uint64) << np.uint64(2)
    a, b = base, base | np.uint64(1)
    sites: Rows = []
    for s in range(3):
        cohort_keys = np.concatenate([a[(np.arange(200) + s) % 3 == 0], b[(np.arange(200) + 2 * s) % 4 == 1]])
        outcome = np.concatenate([a, b, b[::5]])
        sites.append((cohort_keys, outcome, np.arange(outcome.size) % 17))
    expected = pandas_linked(sites)
    assert secure(sites) == expected


def test_the_farthest_cohort_record_a_window_must_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pairs A < B on one sort prefix: A in the cohort at site 0 only, B at every site, both with
    # an outcome at every site. Sorted: cA0 cB0 cB1 cB2 oA0 oB0 oA1 oB1 oA2, so A's outcome at
    # site 2 is 3 S - 1 = 8 records after its only cohort record: the window's worst case.
    rng = np.random.default_rng(11)
    a = rng.integers(0, 2**62, size=100, dtype=np.uint64) << np.uint64(2)
    b = a | np.uint64(1)
    sites: Rows = [
        (np.concatenate([a, b]) if s == 0 else b, np.concatenate([a, b]), np.full(200, s + 1)) for s in range(3)
    ]
    expected = pandas_linked(sites)
    assert expected == [200, 600, 1200]
    assert secure(sites) == expected
    monkeypatch.setattr(cohort, "window", lambda sites: 3 * sites - 2)  # one short: must miss A's last outcomes
    assert secure(sites) != expected


def test_nothing_linked() -> None:
    sites: Rows = [(mixed([1, 2]), mixed([3, 4]), np.array([5, 6])), (mixed([7]), mixed([8]), np.array([9]))]
    assert secure(sites) == [0, 0, 0]


def test_release_rule_withholds_below_k_linked_persons() -> None:
    # k - 1 linked persons (with many rows, at several sites): everything withheld; k: released.
    ids = mixed(np.arange(50))
    for linked, released in ((4, False), (5, True)):
        sites: Rows = [
            (ids[:linked], np.repeat(ids[:30], 3), np.arange(90)),
            (np.zeros(0, dtype=np.uint64), ids[:40], np.arange(40)),
            (ids[45:], ids[:40], np.ones(40, dtype=np.int64)),  # its cohort persons have no outcome
        ]
        truth = pandas_linked(sites)
        assert truth[0] == linked
        assert secure(sites, k=5) == (truth if released else [None, None, None])


@pytest.mark.parametrize(
    ("differences", "withheld"),
    [([[0, 40], [0, 40], [0, 0]], False), ([[1, 40], [1, 40], [0, 0]], True), ([[], [], []], False)],
)
def test_the_ledger_withholds_when_a_difference_could_isolate_persons(
    differences: list[list[int]], withheld: bool
) -> None:
    sites = registry_and_admissions(600, 4)
    mine = [records(s) for s in sites]

    def program(p: Party) -> Protocol[list[int] | None]:
        diff = np.asarray(differences[p.index], dtype=np.uint64).reshape(1, -1)
        kept, flags = yield from cohort.committee_release(p, mine[p.index], 3, 5, differences=diff, ledger_k=13)
        return (yield from cohort.open_linked(p, kept, flags))

    results, _ = run_in_memory(program)
    assert results[0] == (None if withheld else pandas_linked(sites))


def test_members_holding_data_input_their_own_records() -> None:
    rows = cohort.synthetic_rows(500, 9)
    mine = [records(s) for s in rows]

    def program(p: Party) -> Protocol[list[int] | None]:
        kept, flags = yield from cohort.committee_release(p, mine[p.index], 3, 5)
        return (yield from cohort.open_linked(p, kept, flags))

    results, _ = run_in_memory(program)
    assert results[0] == pandas_linked(rows)


def test_a_failed_local_step_fails_every_member_and_an_oversized_announcement_is_refused() -> None:
    made = [records(s) for s in cohort.synthetic_rows(50, 9)]
    mine: list[cohort.SiteRecords | None] = [made[0], None, made[2]]
    with pytest.raises(LocalStepError):
        run_in_memory(lambda p: cohort.committee_release(p, mine[p.index], 3, 5))
    with pytest.raises(ProtocolViolation):
        run_in_memory(lambda p: cohort.committee_release(p, made[p.index], 3, 5, max_keys=40))


def test_batches_give_the_same_aggregates(monkeypatch: pytest.MonkeyPatch) -> None:
    # The window's equalities, products and comparisons in several batches (smaller messages).
    monkeypatch.setattr(dedup, "BATCH", 1000)
    sites = cohort.synthetic_rows(1000, 3)
    assert secure(sites) == pandas_linked(sites)


# ----------------------------------------------------------------------------- views

TAGS = np.array([1, 1, 0, 0, 1, 0], dtype=np.uint64)  # sorted records: cohort tags
NONE = mixed([1, 2, 3, 4, 5, 6])  # no outcome record matches a cohort record
SOME = mixed([1, 1, 1, 1, 5, 5])  # records 2, 3 and 5 are linked


def _tally(p: Party, keys: AShare, tags: AShare, plain: np.ndarray):  # type: ignore[no-untyped-def]
    one = ar.constant(p, np.ones(6, dtype=np.uint64), AShare)
    return (yield from cohort.tally(p, keys, tags, [one - tags, keys], cohort.window(3)))


def _tally_opening_the_flags(p: Party, keys: AShare, tags: AShare, plain: np.ndarray):  # type: ignore[no-untyped-def]
    """A planted leak: the window's first steps, then the match counts m_j opened to every member."""
    same = yield from dedup.window_equalities(p, keys, 5)
    hits = yield from ar.mul(p, same, dedup.earlier(tags, 5))
    return (yield from ar.open_all(p, dedup.per_record(hits, 6, 5)))


def _views(program, runs: int):  # type: ignore[no-untyped-def]
    return collect(program, (NONE, TAGS), runs, 100), collect(program, (SOME, TAGS), runs, 200)


def _distinguishable(a, b, member: int) -> bool:  # type: ignore[no-untyped-def]
    return not (
        position_p_value(a[member].words, b[member].words) > ALPHA
        and affine_relations(a[member].words) == affine_relations(b[member].words) == 0
    )


def test_tally_view_does_not_depend_on_which_records_match() -> None:
    # Every word a member holds or receives in the equalities, products and comparisons has one
    # distribution whether no record matches or half of them do, for each of the three members.
    runs = runs_for(max(v.words.shape[1] for v in collect(_tally, (NONE, TAGS), 1, 0)))
    a, b = _views(_tally, runs)
    for member in (0, 1, 2):
        assert not _distinguishable(a, b, member)


def test_a_planted_leak_of_the_match_flags_fails_the_view_check() -> None:
    runs = runs_for(max(v.words.shape[1] for v in collect(_tally_opening_the_flags, (NONE, TAGS), 1, 0)))
    a, b = _views(_tally_opening_the_flags, runs)
    assert all(_distinguishable(a, b, member) for member in (0, 1, 2))
