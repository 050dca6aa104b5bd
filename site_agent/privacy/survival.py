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

Cost: one batch of comparisons for the remainders, then per block one batch of comparisons and
three product rounds (about 11 rounds): the number of blocks, never the data, sets the rounds.
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
"""The greedy scan's length in blocks (each block costs about 11 rounds)."""


def block_width(bins: int, k: int) -> int:
    """The public block width w of a grid of ``bins`` points: 1 when every bin passes (k = 1) or
    the grid is short, else the smallest width giving at most :data:`MAX_BLOCKS` blocks."""
    return 1 if k <= 1 else max(1, -(-bins // MAX_BLOCKS))


def _bad(below_k: AShare, below_1: AShare) -> AShare:
    """[1 <= x < k] from [x < k] and [x < 1]."""
    return below_k - below_1


def step_pattern(p: Party, events: AShare, censored: AShare, k: int) -> Protocol[tuple[AShare, AShare]]:
    """0/1 shares (ends (groups, blocks), whole (groups,)): ``ends[g, b]`` = 1 where a released step
    of group g ends with block b (the last block always ends one), ``whole[g]`` = 1 where group
    g's curve may be released at all.

    ``events`` and ``censored`` are pooled counts per group and block, shape (groups, blocks).
    """
    groups, blocks = events.shape
    ones = _const(p, 1, (groups,))
    if k <= 1:  # every count is 0 or >= 1: every block ends a step, every curve is released
        return _const(p, 1, (groups, blocks)), ones
    total_d, total_c = events.sum(axis=1), censored.sum(axis=1)
    rem_d = AShare(total_d.v[:, :, None] - events.cumsum(axis=1).v)
    rem_c = AShare(total_c.v[:, :, None] - censored.cumsum(axis=1).v)
    flat = AShare.concat([rem_d.reshape(-1), rem_c.reshape(-1), total_d, total_c])
    n = flat.shape[0]
    below = yield from bo.lt(p, AShare.concat([flat, flat]), AShare.concat([_const(p, k, (n,)), _const(p, 1, (n,))]))
    bad = _bad(below[:n], below[n:])
    m = groups * blocks
    good = _const(p, 1, (2 * m + 2 * groups,)) - bad
    both = yield from ar.mul(
        p,
        AShare.concat([good[:m], good[2 * m : 2 * m + groups]]),
        AShare.concat([good[m : 2 * m], good[2 * m + groups :]]),
    )
    rest_ok, whole = both[:m].reshape(groups, blocks), both[m:]
    acc_d = acc_c = _const(p, 0, (groups,))
    ends = []
    limits = AShare.concat([_const(p, k, (2 * groups,)), _const(p, 1, (3 * groups,))])
    for b in range(blocks):
        acc_d, acc_c = acc_d + events[:, b], acc_c + censored[:, b]
        below = yield from bo.lt(p, AShare.concat([acc_d, acc_c, acc_d, acc_c, acc_d + acc_c]), limits)
        g = groups
        good_d = ones - _bad(below[:g], below[2 * g : 3 * g])
        good_c = ones - _bad(below[g : 2 * g], below[3 * g : 4 * g])
        pair = yield from ar.mul(
            p, AShare.concat([good_d, ones - below[4 * g :]]), AShare.concat([good_c, rest_ok[:, b]])
        )
        cut = yield from ar.mul(p, pair[:g], pair[g:])
        ends.append(cut)
        kept = yield from ar.mul(p, AShare.concat([acc_d, acc_c]), AShare.concat([cut, cut]))
        acc_d, acc_c = acc_d - kept[:g], acc_c - kept[g:]
    ends[-1] = ones  # the remainder after the last end is the last step
    return AShare(np.stack([e.v for e in ends], axis=2)), whole


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
