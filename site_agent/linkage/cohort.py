"""Linked cohorts on shares: outcomes at every site, of the persons of a cohort at any site.

``SELECT COUNT(*), SUM(a.x), AVG(a.x) FROM cohort c LINK outcome a`` (:mod:`.statement`): the
cohort's persons are those whose linkage key (:mod:`.oprf`) is in the cohort table at some site;
the linked outcome rows are every site's outcome rows whose person's key is among them. Nobody
learns which records matched:

1. **Local step, at each site.** The distinct keys of its cohort persons, and per distinct key
   of its outcome persons the sums of a few integer columns over its outcome rows (the
   statement's: 1 for COUNT(*), [x is not NULL] and x for SUM and AVG; :func:`site_records`).
   A person has then at most one cohort and one outcome record per site. Each record goes in
   as shares: its key, its key's top t bits and its sums (all 0 for a cohort record).
2. **One sort.** Cohort records come first in the input order (every site's cohort records,
   then every site's outcome records), so sorting by (prefix, input position) with the shuffle
   sort of :func:`site_agent.linkage.dedup.sort_records` (the de-duplication's sort, the same
   argument: distinct sort keys, opened comparisons a function of a uniformly random
   permutation) puts a key's cohort records before its outcome records. The records' columns
   and their cohort tags (public at input, secret once shuffled) go through the same shuffle.
3. **The window, on shares.** For each sorted record j and d = 1..w, e_jd = [K_j == K_{j-d}]
   (:func:`site_agent.linkage.dedup.window_equalities`); m_j = sum_d e_jd c_{j-d} counts the
   earlier cohort records with j's key (c: the cohort tag) and o_j = sum_d e_jd - m_j the earlier
   outcome records with it. L_j = [m_j > 0] flags a linked record, F_j = [o_j > 0] a person's
   outcome record after its first. With w = 3 S - 1 (S sites) both are exact unless three
   persons share a t-bit prefix (as for the distinct count: about P^3 / (6 2^(2t)) for P
   persons). Proof: the records on one prefix are contiguous and in input order (cohort
   records by site, then outcome records by site, each site's keys ascending), one record per
   person, site and table. Take an outcome record j of person A at site s, and A's last
   cohort record, at site s'; with one other person B on the prefix, between them lie B's
   cohort records after A's (at sites after s', and at s' if B > A: at most S, and at most
   S - 1 if B < A), the outcome records at sites before s (at most 2 (S - 1)) and B's at s if
   B < A (at most 1): at most 3 S - 2 records, so j is within 3 S - 1 of it. A's outcome
   record before j (at a site s'' < s) is nearer still: only B's records at sites s''..s lie
   between. ``tests/linkage/test_cohort.py`` plants the worst case (distance 3 S - 1).
4. **The aggregates, on shares.** Each column's linked total sum_j L_j v_j (cohort records hold
   zeros, so they add nothing), and the linked persons sum_j L_j (1 - c_j) (1 - F_j) (each
   linked person once, whatever the number of sites holding its outcomes).
5. **Release** (:func:`release`): every number together or not at all, only if the linked
   persons are 0 or at least k (:func:`site_agent.privacy.checks.stopped`), and never where the
   statement's persons differ from a set released to the analyst before by too few (the
   release ledger's differences, as for ``COUNT(DISTINCT PERSON)``). A mean is a released sum
   over a released count, computed by whoever receives them.

**What is revealed**: each site's numbers of distinct cohort keys and of distinct outcome keys
(the set sizes), the sort's opened comparisons (uniform whatever the data), the stop flag and
the released numbers. The match flags L_j, F_j exist only as shares; no member and no site
learns which of its records matched (``tests/linkage/test_cohort.py`` checks the views).

Costs (n records: distinct cohort keys plus distinct outcome keys over all sites, v columns):
the inputs (2 + v words per outcome record, 2 per cohort record), the shuffle, the sort (about
2 n ln n opened comparisons), w n equalities and as many products, 2 n comparisons and
(v + 2) n products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import LocalStepError, ProtocolViolation
from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.fixed import decode_int, encode_int
from ..mpc.party import Party, Protocol, exchange
from ..mpc.ring import U64, asring
from ..mpc.shares import AShare
from ..mpc.sharing import deal
from ..privacy.checks import stopped
from . import dedup


def window(sites: int) -> int:
    """w: how many earlier sorted records each record is compared with (module docstring, step 3)."""
    return 3 * sites - 1


@dataclass(frozen=True)
class SiteRecords:
    """One site's local step (:func:`site_records`): what it inputs, before sharing."""

    cohort: U64  # distinct keys of its cohort persons
    outcome: U64  # distinct keys of its outcome persons, ascending
    sums: U64  # (columns, outcome keys): each column's sum over the key's outcome rows here

    @property
    def sizes(self) -> tuple[int, int]:
        return self.cohort.size, self.outcome.size


def site_records(cohort_keys: U64, outcome_keys: U64, columns: Sequence[np.ndarray]) -> SiteRecords:
    """A site's cohort keys (one per cohort row or person) and outcome rows (a key and integer
    ``columns``, one value per row each) as its records: distinct cohort keys, and per distinct
    outcome key each column's sum (ring arithmetic, exact while a pooled sum is below 2^63)."""
    keys, where = np.unique(asring(outcome_keys), return_inverse=True)
    sums = np.zeros((len(columns), keys.size), dtype=np.uint64)
    for i, column in enumerate(columns):
        np.add.at(sums[i], where, encode_int(column))
    return SiteRecords(np.unique(asring(cohort_keys)), keys, sums)


@dataclass(frozen=True)
class Records:
    """Every site's records as one member's shares, cohort records first (``cohort`` of them)."""

    keys: AShare
    prefixes: AShare
    sums: list[AShare]  # one per column
    cohort: int


def aggregates(p: Party, records: Records, sites: int) -> Protocol[AShare]:
    """Shares of [linked persons, each column's linked total] (steps 2-4)."""
    n, v = records.keys.shape[0], len(records.sums)
    if n < 2 or sites < 2:
        return ar.constant(p, np.zeros(1 + v, dtype=np.uint64), AShare)
    tag = ar.constant(p, (np.arange(n) < records.cohort).astype(np.uint64), AShare)
    (keys, tag, *sums), _ = yield from dedup.sort_records(p, records.prefixes, [records.keys, tag, *records.sums])
    return (yield from tally(p, keys, tag, sums, window(sites)))


def tally(p: Party, keys: AShare, tag: AShare, sums: Sequence[AShare], w: int) -> Protocol[AShare]:
    """Steps 3 and 4 on the sorted records: the aggregates, all on shares (nothing opened)."""
    n = keys.shape[0]
    w = min(w, n - 1)
    same = yield from dedup.window_equalities(p, keys, w)
    hits = yield from dedup.in_batches(lambda a, b: ar.mul(p, a, b), same, dedup.earlier(tag, w))
    cohort_before = dedup.per_record(hits, n, w)  # m_j
    outcome_before = dedup.per_record(same, n, w) - cohort_before  # o_j
    flags = yield from dedup.in_batches(lambda a: bo.ltz(p, a), -AShare.concat([cohort_before, outcome_before]))
    linked, repeated = AShare(flags.v[:, :n]), AShare(flags.v[:, n:])
    one = ar.constant(p, np.ones(n, dtype=np.uint64), AShare)
    v = len(sums)
    both = yield from dedup.in_batches(
        lambda a, b: ar.mul(p, a, b), AShare.concat([linked] * (v + 1)), AShare.concat([one - tag, *sums])
    )  # L (1 - c), then L v_j for each column
    firsts = yield from dedup.in_batches(lambda a, b: ar.mul(p, a, b), AShare(both.v[:, :n]), one - repeated)
    totals = [both.v[:, (i + 1) * n : (i + 2) * n].sum(axis=1) for i in range(v)]
    return AShare(np.stack([firsts.v.sum(axis=1), *totals], axis=1))


def release(
    p: Party, values: AShare, k: int, ledger: AShare | None = None, ledger_k: int | None = None
) -> Protocol[tuple[AShare, AShare]]:
    """The release rule on shares: (values, all zeroed if stopped; their 0/1 stop flags).

    One decision for every number: the linked persons (row 0) 0 or at least ``k``, and no
    pooled difference with a remembered set (``ledger``, shape (query sets, m)) in
    1..``ledger_k`` - 1."""
    persons = AShare(values.v[:, :1])
    sets = 0 if ledger is None or ledger.shape[-1] == 0 else ledger.shape[0]
    extra = None if ledger is None or not sets else ledger.reshape(sets, 1, ledger.shape[-1])
    stop, _ = yield from stopped(
        p,
        [[persons]],
        [[]],
        [[]],
        k,
        persons.reshape(1, 1),
        extra,
        [list(range(sets))] if extra is not None else (),
        extra_k=ledger_k,
    )
    flags = AShare(np.repeat(stop.v.reshape(2, 1), values.shape[0], axis=1))
    one = ar.constant(p, np.ones(values.shape, dtype=np.uint64), AShare)
    kept = yield from ar.mul(p, values, one - flags)
    return kept, flags


def open_linked(p: Party, kept: AShare, flags: AShare) -> Protocol[list[int] | None]:
    """Open the kept numbers and the stop flag to every member (tests, benchmarks): [linked
    persons, each column's linked total], or None where the release rule withheld them."""
    opened = yield from ar.open_all(p, AShare.concat([kept, flags]))
    m = kept.shape[0]
    return None if opened[m] else [int(v) for v in decode_int(opened[:m])]


def linked_aggregates(p: Party, records: Records, sites: int, k: int) -> Protocol[list[int] | None]:
    """:func:`aggregates`, the release rule and the opening, on dealt records (tests, benchmarks)."""
    values = yield from aggregates(p, records, sites)
    kept, flags = yield from release(p, values, k)
    return (yield from open_linked(p, kept, flags))


def committee_release(
    p: Party,
    mine: SiteRecords | None,
    sites: int,
    k: int,
    max_keys: int = 1 << 26,
    differences: U64 | None = None,
    ledger_k: int | None = None,
) -> Protocol[tuple[AShare, AShare]]:
    """The protocol as committee members holding data run it: each announces its numbers of
    cohort and outcome records (one round: the set sizes), inputs its records (one round), and
    the aggregates and the release rule follow; shares of the kept numbers and the stop flags.
    ``mine`` None (its local step failed) makes every member raise :class:`LocalStepError`
    alike, naming no site.
    ``differences`` (query sets, m): this member's differences with the analyst's remembered
    sets, as :func:`site_agent.linkage.dedup.committee_release`."""
    sizes = np.array([dedup.NO_KEYS, 0] if mine is None else mine.sizes, dtype=np.uint64)
    got = yield from exchange(send={p.next: sizes, p.prev: sizes}, expect={p.next: 2, p.prev: 2})
    announced = {p.index: sizes, **got}
    if any(int(a[0]) == dedup.NO_KEYS for a in announced.values()):
        raise LocalStepError()
    if any(int(a.max()) > max_keys for a in announced.values()):
        raise ProtocolViolation(f"a member announced more than {max_keys} linkage keys")
    assert mine is not None
    counts = [(int(announced[i][0]), int(announced[i][1])) for i in range(3)]
    records = yield from member_inputs(p, mine, counts)
    values = yield from aggregates(p, records, sites)
    pooled = None
    if differences is not None and differences.size:
        m = differences.size
        shared = yield from ar.input_all(p, asring(differences).reshape(-1), (m, m, m))
        pooled = (shared[0] + shared[1] + shared[2]).reshape(*differences.shape)
    return (yield from release(p, values, k, pooled, ledger_k))


def member_inputs(p: Party, mine: SiteRecords, counts: Sequence[tuple[int, int]]) -> Protocol[Records]:
    """Members holding data input their own records in one round; ``counts`` are every
    member's (cohort, outcome) record numbers, public (the plan's declared set sizes)."""
    total = sum(c + o for c, o in counts)
    v = mine.sums.shape[0]
    flat = np.concatenate(_columns(mine, total))
    shared = yield from ar.input_all(p, flat, tuple(2 * c + (2 + v) * o for c, o in counts))
    return _layout([_split(s, c, o, v) for s, (c, o) in zip(shared, counts, strict=True)], v)


def _columns(site: SiteRecords, total: int) -> list[U64]:
    """A site's input words: cohort keys and prefixes, outcome keys and prefixes, each column's sums."""
    shift = np.uint64(64 - dedup.prefix_bits(total))
    return [site.cohort, site.cohort >> shift, site.outcome, site.outcome >> shift, *site.sums]


def _split(x: AShare, c: int, o: int, v: int) -> list[AShare]:
    bounds = np.cumsum([0, c, c, o, o] + [o] * v)
    return [AShare(x.v[:, bounds[i] : bounds[i + 1]]) for i in range(4 + v)]


def _layout(parts: Sequence[Sequence[AShare]], v: int) -> Records:
    """Every site's columns (:func:`_columns`, as shares) into :class:`Records`: all cohort records
    first (site order), then all outcome records."""
    col = [AShare.concat([part[i] for part in parts]) for i in range(4 + v)]
    zeros = AShare(np.zeros((2, col[0].shape[0]), dtype=np.uint64))
    return Records(
        keys=AShare.concat([col[0], col[2]]),
        prefixes=AShare.concat([col[1], col[3]]),
        sums=[AShare.concat([zeros, col[4 + i]]) for i in range(v)],
        cohort=col[0].shape[0],
    )


def deal_sites(sites: Sequence[SiteRecords], rng: np.random.Generator | None = None) -> list[Records]:
    """Every site's records dealt (what sites outside the committee do): each member's shares."""
    total = sum(sum(s.sizes) for s in sites)
    v = sites[0].sums.shape[0]
    dealt = [deal(np.concatenate(_columns(s, total)), rng) for s in sites]
    return [_layout([_split(d[i], *s.sizes, v) for d, s in zip(dealt, sites, strict=True)], v) for i in range(3)]


def synthetic_rows(per_site: int, seed: int) -> list[tuple[U64, U64, np.ndarray]]:
    """Three sites for tests and benchmarks, as (cohort keys, outcome keys, outcome values) per
    site: the persons of :func:`site_agent.linkage.dedup.synthetic_sites` (``per_site`` each,
    half seen at two or more sites); a third of every site's persons in its cohort table, and
    every person 1 to 3 outcome rows at each site holding it, values 0..99."""
    rng = np.random.default_rng(seed)
    out = []
    for keys in dedup.synthetic_sites(per_site, seed):
        outcome = np.repeat(keys, rng.integers(1, 4, keys.size))
        out.append((keys[rng.random(keys.size) < 1 / 3], outcome, rng.integers(0, 100, outcome.size)))
    return out
