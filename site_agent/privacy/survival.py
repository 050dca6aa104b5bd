"""The release rule for survival curves: which steps of a Kaplan-Meier curve may be shown.

A curve on a public time grid of J points is released as *steps*: consecutive runs of grid
bins (bin j holds the persons whose time lies in (t_{j-1}, t_j]), each shown at the time its
last bin ends. For each step the analyst sees the persons at risk at its start, its events and
its censorings, and the curve at its end. Subtracting released numbers of one curve yields
exactly these sets: the at-risk count of a step minus the next one's is the step's events plus
censorings, and the at-risk count at a step is the sum of every later step's events and
censorings. So the rule of docs/privacy.md (every released number over sets of 0 or >= k
persons, including sets derived by subtraction) holds for a curve when **each released step's
events and each released step's censorings number 0 or at least k**; the persons at risk at
every step are then 0 or >= k too (a sum of such counts), and so is the group (the first step's
at-risk count).

The steps are chosen on shares, never from values in the clear, by a greedy scan over *blocks*
of w consecutive bins (w public, from the plan: 1 when the grid has at most
:data:`MAX_BLOCKS` bins, so that a step can end at any grid point; coarser on longer grids):
walking from the first block, a step ends after a block when the events and the censorings
gathered since the previous end each number 0 or >= k, are not both 0, and the persons after
that block (the group's totals minus everything so far, a linear function of the counts) also
have events and censorings of 0 or >= k each. The last step is the remainder after the last
end, which passed that check when the end was made, so every released step passes; a group
whose totals do not pass (its events or censorings number 1..k-1) has no curve. With k = 1
every grid bin is a step: the curve is exact at every grid point.

Revealed: which blocks end a step (one 0/1 word per group and block) and whether each group has
a curve. Where a step holds several blocks, this tells that the first ones alone did not pass:
bounds on counts, as a suppression flag tells that a cell holds 1 to k-1 persons
(docs/privacy.md, "What remains possible").

Cost: one batch of comparisons over every run of blocks (B (B + 1) / 2 per group) and three
product rounds, then one product round per two blocks: B / 2 + 11 rounds, set by the number of
blocks, never by the data.
"""

from __future__ import annotations

import numpy as np

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare


def _const(p: Party, value: int, shape: tuple[int, ...]) -> AShare:
    return ar.constant(p, np.full(shape, value, dtype=np.int64).view(np.uint64), AShare)


MAX_BLOCKS = 128
"""The greedy scan's length in blocks (one round per two blocks)."""


def block_width(bins: int, k: int) -> int:
    """The public block width w of a grid of ``bins`` points: 1 when every bin passes (k = 1) or
    the grid is short, else the smallest width giving at most :data:`MAX_BLOCKS` blocks."""
    return 1 if k <= 1 else max(1, -(-bins // MAX_BLOCKS))


def _public(p: Party, values: np.ndarray) -> AShare:
    return ar.constant(p, np.asarray(values, dtype=np.int64).view(np.uint64), AShare)


def _bad(below_k: AShare, below_1: AShare) -> AShare:
    """[1 <= x < k] from [x < k] and [x < 1]."""
    return below_k - below_1


def step_pattern(p: Party, events: AShare, censored: AShare, k: int) -> Protocol[tuple[AShare, AShare]]:
    """0/1 shares (ends (groups, blocks), whole (groups,)): ``ends[g, b]`` = 1 where a released step
    of group g ends with block b (the last block always ends one), ``whole[g]`` = 1 where group
    g's curve may be released at all.

    ``events`` and ``censored`` are pooled counts per group and block, shape (groups, blocks).
    First, in one batch of comparisons, whether each run of blocks a..b may end a step (its
    events and censorings 0 or >= k each and not both 0, those after b too); then the greedy
    scan carries the start of the current step as a one-hot vector (:func:`_scan`), one product
    round per two blocks.
    """
    groups, blocks = events.shape
    ones = _const(p, 1, (groups,))
    if k <= 1:  # every count is 0 or >= 1: every block ends a step, every curve is released
        return _const(p, 1, (groups, blocks)), ones
    zero = np.zeros((2, groups, 1), dtype=np.uint64)
    cum_d = np.concatenate([zero, events.cumsum(axis=1).v], axis=2)
    cum_c = np.concatenate([zero, censored.cumsum(axis=1).v], axis=2)
    first, last = np.triu_indices(blocks)  # every run of blocks first..last
    run_d, run_c = (
        AShare(cum_d[:, :, last + 1] - cum_d[:, :, first]),
        AShare(cum_c[:, :, last + 1] - cum_c[:, :, first]),
    )
    rest_d, rest_c = AShare(cum_d[:, :, -1:] - cum_d[:, :, 1:]), AShare(cum_c[:, :, -1:] - cum_c[:, :, 1:])
    tot_d, tot_c = AShare(cum_d[:, :, -1]), AShare(cum_c[:, :, -1])
    counts = [run_d, run_c, rest_d, rest_c, tot_d, tot_c]
    flat = AShare.concat([x.reshape(-1) for x in counts])
    n, runs = flat.shape[0], groups * len(first)
    below = yield from bo.lt(
        p,
        AShare.concat([flat, flat, (run_d + run_c).reshape(-1)]),
        AShare.concat([_const(p, k, (n,)), _const(p, 1, (n + runs,))]),
    )
    good = _const(p, 1, (n,)) - _bad(below[:n], below[n : 2 * n])
    some = _const(p, 1, (runs,)) - below[2 * n :]  # the run holds somebody
    sizes = [x.size for x in counts]
    at = np.cumsum([0, *sizes])
    g_run_d, g_run_c, g_rest_d, g_rest_c, g_tot_d, g_tot_c = (good[at[i] : at[i + 1]] for i in range(6))
    first_round = yield from ar.mul(
        p, AShare.concat([g_run_d, g_rest_d, g_tot_d]), AShare.concat([g_run_c, g_rest_c, g_tot_c])
    )
    both, rest_ok, whole = (
        first_round[:runs],
        first_round[runs : runs + groups * blocks].reshape(groups, blocks),
        first_round[runs + groups * blocks :],
    )
    after = yield from ar.mul(p, some, AShare(rest_ok.v[:, :, last].reshape(2, -1)))
    passes = yield from ar.mul(p, both, after)
    table = np.zeros((2, groups, blocks, blocks), dtype=np.uint64)  # table[g, a, b]: run a..b may end a step
    table[:, :, first, last] = passes.reshape(groups, len(first)).v
    ends = yield from _scan(p, AShare(table), ones)
    return ends, whole


def _scan(p: Party, table: AShare, ones: AShare) -> Protocol[AShare]:
    """The greedy scan over ``table`` (groups, a, b): 1 where a step may run from block a to b.

    The first block of the current step is a one-hot vector ``begin``. At block b,
    hit[a] = begin[a] table[a, b]; the step ends here (cut = sum of hit) exactly where the start
    leaves a (begin[a] cut = hit[a], begin being one-hot). Two blocks take one product round:
    with U[a] = (1 - table[a, b]) table[a, b + 1] and W[a] = table[a, b] table[b + 1, b + 1]
    (all formed in one round beforehand), block b + 1's hits are begin[a] U[a] (a <= b) and
    sum_a begin[a] W[a] (a = b + 1), all products of ``begin`` before block b.
    """
    groups, blocks, _ = table.shape
    t = table.v
    pairs = list(range(0, blocks - 2, 2))  # blocks b, b + 1 done together (the last block ends a step)
    u = w = None
    if pairs:
        now = np.stack([t[:, :, :, b] for b in pairs], axis=3)
        nxt = np.stack([t[:, :, :, b + 1] for b in pairs], axis=3)
        diag = np.stack([np.repeat(t[:, :, b + 1, b + 1 : b + 2], blocks, axis=2) for b in pairs], axis=3)
        one = _const(p, 1, now.shape[1:])
        both = yield from ar.mul(
            p,
            AShare.concat([one - AShare(now), AShare(now)], axis=1),
            AShare.concat([AShare(nxt), AShare(diag)], axis=1),
        )
        u, w = both.v[:, :, :blocks], both.v[:, :, blocks:]
    start = np.zeros((groups, blocks), dtype=np.int64)
    start[:, 0] = 1
    begin = _public(p, start)
    ends: list[AShare] = []
    b = 0
    while b < blocks - 1:
        if pairs and b in pairs and u is not None and w is not None:
            i = pairs.index(b)
            factors = AShare.concat([AShare(t[:, :, :, b]), AShare(u[..., i]), AShare(w[..., i])], axis=1)
            got = yield from ar.mul(p, AShare.concat([begin, begin, begin], axis=1), factors)
            hit, hit_next, into = got[:, :blocks], got[:, blocks : 2 * blocks], got[:, 2 * blocks :].sum(axis=1)
            cut = hit.sum(axis=1)
            cut_next = hit_next.sum(axis=1) + into
            ends += [cut, cut_next]
            begin = begin - hit - hit_next
            begin.v[:, :, b + 1] += (cut - into).v
            begin.v[:, :, b + 2] += cut_next.v
            b += 2
        else:
            hit = yield from ar.mul(p, begin, AShare(t[:, :, :, b]))
            cut = hit.sum(axis=1)
            ends.append(cut)
            begin = begin - hit
            begin.v[:, :, b + 1] += cut.v
            b += 1
    ends.append(ones)  # the remainder after the last end is the last step
    return AShare(np.stack([e.v for e in ends], axis=2))


def step_pattern_reference(events: np.ndarray, censored: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The same rule in the clear, group by group (for tests): (ends, whole) as 0/1 arrays."""
    groups, blocks = events.shape

    def ok(x: int) -> bool:
        return not 1 <= x < k

    ends = np.zeros((groups, blocks), dtype=np.int64)
    whole = np.zeros(groups, dtype=np.int64)
    for g in range(groups):
        whole[g] = ok(int(events[g].sum())) and ok(int(censored[g].sum()))
        acc_d = acc_c = 0
        for b in range(blocks):
            acc_d, acc_c = acc_d + int(events[g, b]), acc_c + int(censored[g, b])
            rest_d, rest_c = int(events[g, b + 1 :].sum()), int(censored[g, b + 1 :].sum())
            if ok(acc_d) and ok(acc_c) and acc_d + acc_c > 0 and ok(rest_d) and ok(rest_c):
                ends[g, b] = 1
                acc_d = acc_c = 0
        ends[g, -1] = 1
    return ends, whole


def blocks_of(x: AShare, width: int) -> AShare:
    """Counts per (group, bin) summed into blocks of ``width`` bins (the last one padded): local."""
    groups, bins = x.shape
    count = -(-bins // width)
    out = np.zeros((2, groups, count * width), dtype=np.uint64)
    out[:, :, :bins] = x.v
    return AShare(out.reshape(2, groups, count, width).sum(axis=3, dtype=np.uint64))


def released_steps(ends: np.ndarray, bins: int, width: int = 1) -> list[tuple[int, int]]:
    """The released steps of one group's opened ``ends`` row (one flag per block of ``width``
    bins) as (first bin, last bin) over the grid's ``bins`` (public: a function of opened flags)."""
    out, start = [], 0
    for end in np.flatnonzero(ends):
        last = min((int(end) + 1) * width, bins) - 1
        out.append((start, last))
        start = last + 1
    return out
