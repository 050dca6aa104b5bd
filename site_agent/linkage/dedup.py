"""Cross-site de-duplication on shares: pooled distinct persons, and persons seen at 1, 2, 3+ sites.

Every site inputs its distinct linkage keys (:mod:`.oprf`; 64-bit PRF outputs, so equal
persons have equal keys and different persons different ones, except with probability about
P^2 / 2^65 for P persons) as secret shares. The committee then:

1. **Sorts without seeing equality.** Each key goes in twice: the full 64-bit key, and its top
   t = 62 - b bits (b = :func:`site_agent.mpc.samplesort.index_bits` of the total n), which the
   site computes in the clear (:func:`site_columns`). The sort key is prefix 2^b + position
   (position = the value's place in the input, so every sort key is distinct), and the shuffle
   sort of :mod:`site_agent.mpc.samplesort` orders the keys with comparisons opened. What it
   opens is a function of a uniformly random permutation whatever the data (its module
   docstring): equal keys tie on the prefix and are told apart by position, so no opened bit
   depends on which keys are equal.
2. **Compares each key with the ones just before it, on shares.** Keys that share a prefix are
   now adjacent (ordered by position among themselves); persons whose different keys share a
   t-bit prefix may interleave. For every sorted position j and every d = 1..w (the window,
   w = 2 S - 1 for S sites: two persons on one prefix, each at up to S sites), e_jd = [K_j ==
   K_{j-d}] (one batched equality), and c_j = sum_d e_jd is the number of earlier copies of
   K_j: 0 for a person's first record, m - 1 for its m-th. Exact unless three or more persons
   share a t-bit prefix: about P^3 / (6 2^(2t)) (2e-11 for P = 200,000 and t = 43; 1e-6 for
   P = 2,000,000 and t = 40).
3. **Counts.** G_m = #{j : c_j >= m} (one batched comparison for m = 1..S-1). Persons at m or
   more sites: N_{>=1} = n - G_1 (the distinct count), N_{>=m} = G_{m-1} - G_m, N_{>=S} =
   G_{S-1}; persons at exactly m sites are N_{>=m} - N_{>=m+1}.
4. **Release.** The released numbers are the distinct count and the parts (exactly 1, ...,
   exactly S-1, S or more sites), each the size of a set of persons. The release rule
   (:func:`site_agent.privacy.checks.stopped`) decides on shares; the parts are released
   together or not at all (three of them and the total give the fourth), and only then opened.

**What is revealed**: each site's number of distinct keys (the input sizes, declared by the
plan), the opened comparison bits of the sort (uniform whatever the data), the stop flags and
the released counts. Nothing tells any member which keys are equal, so no site learns which of
its persons are seen elsewhere (``tests/linkage/test_dedup.py`` checks the views).

Costs (n keys in all): the inputs (2 words per key), the shuffle (3 rounds), the sort (about
2 n ln n opened comparisons), w n equalities and (S - 1) n comparisons (in batches of
:data:`BATCH` values, so that no message outgrows the agents' frame limit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import LocalStepError, ProtocolViolation
from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.party import Party, Protocol, exchange
from ..mpc.ring import U64, asring
from ..mpc.samplesort import SORT_PIVOTS, index_bits, sort_shuffled
from ..mpc.shares import AShare
from ..mpc.sharing import deal
from ..mpc.shuffle import Index, shuffle
from ..privacy.checks import stopped


def prefix_bits(total: int) -> int:
    """t: how many top bits of a key go into the sort key, for ``total`` keys in all."""
    return 62 - index_bits(total)


def site_columns(keys: U64, total: int) -> tuple[U64, U64]:
    """What a site inputs: its distinct keys, and their top :func:`prefix_bits` bits."""
    k = np.unique(asring(keys))
    return k, k >> np.uint64(64 - prefix_bits(total))


def window(sites: int) -> int:
    """w: how many earlier sorted keys each key is compared with."""
    return 2 * sites - 1


def labels(sites: int) -> list[str]:
    """Names of the released counts, in order: the distinct persons, then the parts."""
    parts = [f"at {m} site{'s' if m > 1 else ''}" for m in range(1, sites)]
    return ["distinct persons", *parts, f"at {sites}+ sites"]


def counts(p: Party, keys: AShare, prefixes: AShare, sites: int) -> Protocol[AShare]:
    """Shares of [distinct persons, persons at exactly 1, ..., S-1 sites, at S or more sites].

    ``keys`` and ``prefixes`` (shape (n,)): every site's :func:`site_columns`, concatenated.
    """
    n = keys.shape[0]
    if prefixes.shape != (n,) or sites < 2:
        raise ValueError("keys and prefixes must be one vector each, from two sites or more")
    if n < 2:
        return ar.constant(p, np.array([n, n] + [0] * (sites - 1), dtype=np.uint64), AShare)
    ordered, _ = yield from sort_keys(p, keys, prefixes)
    return (yield from tally(p, ordered, sites))


def sort_keys(p: Party, keys: AShare, prefixes: AShare) -> Protocol[tuple[AShare, Index]]:
    """Step 1: the keys ordered by (prefix, position), and the public arrangement (which
    shuffled value went where: what the opened comparisons determine)."""
    (ordered,), where = yield from sort_records(p, prefixes, [keys])
    return ordered, where


def sort_records(p: Party, prefixes: AShare, columns: Sequence[AShare]) -> Protocol[tuple[list[AShare], Index]]:
    """Step 1 for records that carry more than their key (:mod:`.cohort`): every column (shape
    (n,)) ordered by (prefix, input position), and the public arrangement. The columns go
    through the same secret shuffle as the sort keys, so a record stays together."""
    n = prefixes.shape[0]
    sort_key = ar.add_public(p, prefixes.lshift(index_bits(n)), np.arange(n, dtype=np.uint64))
    sort_key, *moved = yield from shuffle(p, [sort_key, *columns])
    where = yield from sort_shuffled(p, sort_key.reshape(1, n), np.array([n]), None, SORT_PIVOTS)
    return [AShare(np.take(c.v, where, axis=1)) for c in moved], where


def tally(p: Party, ordered: AShare, sites: int) -> Protocol[AShare]:
    """Steps 2 and 3 on the sorted keys: the counts, all on shares (nothing is opened)."""
    n = ordered.shape[0]
    w = min(window(sites), n - 1)
    same = yield from window_equalities(p, ordered, w)
    copies = per_record(same, n, w)  # c_j: earlier copies of the j-th sorted key
    thresholds = np.repeat(np.arange(sites - 1, dtype=np.uint64), n)  # m - 1 for m = 1..S-1
    below = ar.add_public(p, AShare(-np.tile(copies.v, sites - 1)), thresholds)
    at_least = yield from in_batches(lambda a: bo.ltz(p, a), below)
    g = [at_least.v[:, m * n : (m + 1) * n].sum(axis=1) for m in range(sites - 1)] + [np.zeros(2, dtype=np.uint64)]
    total = ar.constant(p, np.array([n], dtype=np.uint64), AShare).v[:, 0]
    ge = [total - g[0]] + [g[m - 1] - g[m] for m in range(1, sites)]  # N_{>=m}, m = 1..S
    exactly = [ge[m] - ge[m + 1] for m in range(sites - 1)] + [ge[sites - 1]]
    return AShare(np.stack([ge[0], *exactly], axis=1))


def earlier(column: AShare, w: int) -> AShare:
    """The values d = 1..w places before each sorted position, concatenated over d (block d
    has n - d values, for positions d..n-1): what :func:`window_equalities` compares with."""
    n = column.shape[0]
    return AShare.concat([AShare(column.v[:, : n - d]) for d in range(1, w + 1)])


def window_equalities(p: Party, ordered: AShare, w: int) -> Protocol[AShare]:
    """e_jd = [K_j == K_{j-d}] on shares for d = 1..w (arithmetic 0/1), laid out as
    :func:`earlier`; one batched equality, on the differences K_j - K_{j-d} written in place."""
    n = ordered.shape[0]
    gaps = np.empty((2, w * n - w * (w + 1) // 2), dtype=np.uint64)
    at = 0
    for d in range(1, w + 1):
        np.subtract(ordered.v[:, d:], ordered.v[:, : n - d], out=gaps[:, at : at + n - d])
        at += n - d
    return (yield from in_batches(lambda g: bo.is_zero(p, g), AShare(gaps)))


def per_record(blocks: AShare, n: int, w: int) -> AShare:
    """Sum over d of a window's values laid out as :func:`earlier`: one share per sorted position."""
    total = np.zeros((2, n), dtype=np.uint64)
    at = 0
    for d in range(1, w + 1):
        total[:, d:] += blocks.v[:, at : at + n - d]
        at += n - d
    return AShare(total)


BATCH = 1 << 21
"""Values per batch of equalities or comparisons: each round's message stays below the agents'
64 MB frame limit (a comparison sends at most two words per value in a round). Up to 3 x 300,000
keys everything is one batch; more keys take more rounds, not larger messages."""


def in_batches(step: Callable[..., Protocol[AShare]], *columns: AShare) -> Protocol[AShare]:
    """``step`` on slices of at most :data:`BATCH` values of the (1-D) columns, one after the other."""
    n = columns[0].shape[0]
    parts = []
    for start in range(0, n, BATCH):
        parts.append((yield from step(*(AShare(c.v[:, start : start + BATCH]) for c in columns))))
    return AShare.concat(parts)


def release(
    p: Party, values: AShare, k: int, ledger: AShare | None = None, ledger_k: int | None = None
) -> Protocol[tuple[AShare, AShare]]:
    """The release rule on shares: (values with stopped ones zeroed, 0/1 stop flags), both shared.

    Row 0 is the distinct count, checked alone; rows 1.. are the parts, checked together.
    ``ledger`` (m,): the pooled differences of the statement's persons with the m sets released
    to the analyst before (:mod:`site_agent.privacy.ledger`); one in 1..``ledger_k``-1 stops
    every row (:func:`site_agent.privacy.checks.stopped`, its ``extra`` sets).
    """
    one = [AShare(values.v[:, i : i + 1]) for i in range(values.shape[0])]
    parts = one[1:]
    rows = [[one[0]]] + [parts for _ in parts]
    support = values.reshape(values.shape[0], 1)  # its [== 0] flags serve secondary suppression: none here
    extra = None if ledger is None or ledger.shape[0] == 0 else ledger.reshape(1, 1, ledger.shape[0])
    stop, _ = yield from stopped(
        p,
        rows,
        [[] for _ in rows],
        [[] for _ in rows],
        k,
        support,
        extra,
        [[0] for _ in rows] if extra is not None else (),
        extra_k=ledger_k,
    )
    flags = stop.reshape(-1)
    kept = yield from ar.mul(p, values, ar.constant(p, np.ones(values.shape, dtype=np.uint64), AShare) - flags)
    return kept, flags


@dataclass(frozen=True)
class Linked:
    """The opened result: the counts (None where the release rule withheld them)."""

    labels: list[str]
    values: list[int | None]

    def as_dict(self) -> dict[str, int | None]:
        return dict(zip(self.labels, self.values, strict=True))


def linked_counts(p: Party, keys: AShare, prefixes: AShare, sites: int, k: int) -> Protocol[Linked]:
    """:func:`counts`, the release rule, and the declared reveal (kept counts and flags) to all."""
    values = yield from counts(p, keys, prefixes, sites)
    kept, flags = yield from release(p, values, k)
    return (yield from open_linked(p, kept, flags, sites))


def open_linked(p: Party, kept: AShare, flags: AShare, sites: int) -> Protocol[Linked]:
    """Open the kept counts and the stop flags to every member (tests, benchmarks; over the
    agents they go to the analyst instead, :mod:`.statement`)."""
    opened = yield from ar.open_all(p, AShare.concat([kept, flags]))
    m = kept.shape[0]
    return Linked(labels(sites), [None if opened[m + i] else int(opened[i]) for i in range(m)])


NO_KEYS = 1 << 63
"""Announced instead of a size by a member whose keys could not be read: every member fails."""


def committee_release(
    p: Party,
    mine: U64 | None,
    sites: int,
    k: int,
    max_keys: int = 1 << 26,
    differences: U64 | None = None,
    ledger_k: int | None = None,
) -> Protocol[tuple[AShare, AShare]]:
    """The protocol as committee members holding data run it, up to the release rule: each
    member announces its number of distinct keys (one round: the set sizes, a declared reveal),
    inputs its keys (:func:`member_inputs`), and the counts and the rule follow. Returns shares
    of the kept counts and of the stop flags. A member without data inputs no keys; one whose
    keys could not be read (``mine`` None) announces :data:`NO_KEYS` and every member raises
    :class:`LocalStepError` alike, naming no site. ``max_keys`` bounds what a peer may announce.
    ``differences``: this member's differences with the analyst's remembered sets (as many at
    every member), input in one more round and pooled for :func:`release`."""
    n = np.array([NO_KEYS if mine is None else np.unique(asring(mine)).size], dtype=np.uint64)
    got = yield from exchange(send={p.next: n, p.prev: n}, expect={p.next: 1, p.prev: 1})
    announced = {p.index: int(n[0]), **{j: int(v[0]) for j, v in got.items()}}
    if NO_KEYS in announced.values():
        raise LocalStepError()
    if any(v > max_keys for v in announced.values()):
        raise ProtocolViolation(f"a member announced more than {max_keys} linkage keys")
    assert mine is not None
    keys, prefixes = yield from member_inputs(p, mine, (announced[0], announced[1], announced[2]))
    values = yield from counts(p, keys, prefixes, sites)
    pooled = None
    if differences is not None and differences.size:
        m = differences.size
        shared = yield from ar.input_all(p, asring(differences), (m, m, m))
        pooled = shared[0] + shared[1] + shared[2]
    return (yield from release(p, values, k, pooled, ledger_k))


def committee_counts(p: Party, mine: U64 | None, sites: int, k: int, max_keys: int = 1 << 26) -> Protocol[Linked]:
    """:func:`committee_release`, then the counts opened to every member (tests, benchmarks)."""
    kept, flags = yield from committee_release(p, mine, sites, k, max_keys)
    return (yield from open_linked(p, kept, flags, sites))


def member_inputs(p: Party, mine: U64, sizes: tuple[int, int, int]) -> Protocol[tuple[AShare, AShare]]:
    """Committee members holding data input their own keys in one round (``input_all``):
    every member's (keys, prefixes), concatenated in committee order. ``sizes`` are the members'
    numbers of distinct keys, public (the plan's declared set sizes)."""
    keys, prefixes = site_columns(mine, sum(sizes))
    shared = yield from ar.input_all(p, np.concatenate([keys, prefixes]), (2 * sizes[0], 2 * sizes[1], 2 * sizes[2]))
    return (
        AShare.concat([AShare(x.v[:, :s]) for x, s in zip(shared, sizes, strict=True)]),
        AShare.concat([AShare(x.v[:, s:]) for x, s in zip(shared, sizes, strict=True)]),
    )


def synthetic_sites(per_site: int, seed: int) -> list[U64]:
    """Three sites' keys for tests and benchmarks: ``per_site`` persons each, half of every
    site's persons seen at two or more sites (a tenth of them at all three), keys uniform.

    Of each site's persons 1/2 are its own, 2/5 shared with one other site, 1/10 with both."""
    rng = np.random.default_rng(seed)
    one, pair, three = per_site // 2, per_site // 5, per_site - per_site // 2 - 2 * (per_site // 5)
    sizes = [one, one, one, pair, pair, pair, three]
    drawn = rng.integers(0, 2**64, sum(sizes), dtype=np.uint64)
    keys = iter(np.split(drawn, np.cumsum(sizes)[:-1]))
    own = [next(keys) for _ in range(3)]
    pairs = {(a, b): next(keys) for a, b in ((0, 1), (0, 2), (1, 2))}
    everywhere = next(keys)
    return [np.concatenate([own[s], *(k for (a, b), k in pairs.items() if s in (a, b)), everywhere]) for s in range(3)]


def deal_sites(site_keys: Sequence[U64], rng: np.random.Generator | None = None) -> list[tuple[AShare, AShare]]:
    """Each site's :func:`site_columns`, dealt and concatenated: every member's (keys, prefixes).

    What input sites outside the committee do; committee members holding data input their own
    columns with :func:`site_agent.mpc.arithmetic.input_all` instead.
    """
    total = sum(np.unique(asring(k)).size for k in site_keys)
    cols = [site_columns(k, total) for k in site_keys]
    keys = deal(np.concatenate([c[0] for c in cols]), rng)
    prefixes = deal(np.concatenate([c[1] for c in cols]), rng)
    return [(keys[i], prefixes[i]) for i in range(3)]
