"""Shuffle, then sort with comparisons in the open: sorting and selection in O(log n) layers.

After a secret random permutation (:mod:`.shuffle`) of values with distinct keys, any
comparison-based algorithm may open the result of each comparison it makes: the opened bits
are a function of the order of the shuffled keys alone, and that order is a uniformly random
permutation whatever the data (Hamada, Kikuchi, Ikarashi, Chida and Takahashi, "Practically
efficient multi-party sorting protocols from comparison sort algorithms", ICISC 2012, for
quicksort; Asharov et al., CCS 2022, for the replicated three-party setting).
Where the data go is then public bookkeeping, and moving shares is local.

**Distinct keys.** Equal values would show (an all-equal row never has a comparison that
comes out "less"), so each value x at position i of its row (before the shuffle) is compared
as the key x 2^b + i, b = bit length of n - 1: distinct, ordered by value first and by
position among equals. Keys stay exact for |x| < 2^(62 - b) in the ring (real values below
2^(46 - b) at f = 16: 2^32 for n = 10,000, 2^26 for n = 1,000,000): the caller's bound.

**Why the opened bits say nothing.** Let sigma be the rank of each original position (a
bijection, keys being distinct) and pi the shuffle. Everything opened, and everything
computed from it (the arrangement below), is a deterministic function of rho = sigma . pi^-1,
the rank of the key at each shuffled position. Each member knows two of pi's three factors
and the third is uniform and independent of them and of the data, so rho is uniform over all
permutations of each row for every sigma: the transcript has the same distribution for every
input. ``tests/mpc/test_samplesort.py`` checks it on tied and untied inputs.

**The sort** is a sample sort in layers (a multi-pivot quicksort run breadth-first; with one
pivot it is the quicksort of Hamada et al.). The public arrangement splits each row into
segments; in one layer, every segment of two or more elements takes its first s elements as
pivots (random elements, after the shuffle), every element of the segment is compared with
every pivot of its segment but itself in ONE batched comparison (:func:`boolean.msb_bool` of
the key differences, 6 rounds) and the bits are opened (1 round, 64 per word). An element
with c pivots below it goes to bucket 2c, a pivot with c pivots below it to slot 2c + 1; a
stable reordering of each segment by bucket makes the pivots singletons and the buckets the
next layer's segments. Segments of at most s elements are finished in one layer.
``wanted`` ranks turn the sort into a selection: only segments holding a wanted rank go on.

Costs: the shuffle is 3 rounds; a layer is 7 rounds and one comparison per element and
pivot. Segments shrink about s + 1 times per layer, so a selection (a median) takes about
log_{s+1} n + 1 layers and n (s + 1) comparisons; a full sort about
n s log_{s+1} n comparisons, and layers as deep as the deepest leaf of a random
(s + 1)-ary search tree. :func:`sort_reference` is the same algorithm on plaintext keys,
element by element; the tests check that the kernel arranges keys exactly as it does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .arithmetic import add_public
from .boolean import msb_bool
from .party import Party, Protocol, exchange
from .ring import U64
from .shares import AShare, BShare
from .shuffle import Index, shuffle

SORT_PIVOTS = 1  # full sorts: quicksort, about 2 n ln n comparisons (fewer than with more pivots)
SELECT_PIVOTS = 7  # selections: about n (s + 1) comparisons in log_8 n + 1 layers

_BIT_SHIFTS = np.arange(64, dtype=np.uint64)


def index_bits(n: int) -> int:
    """Bits of the tie-breaking position in a key: the bit length of n - 1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def open_bits(p: Party, b: BShare) -> Protocol[U64]:
    """Open bit 0 of each boolean-shared word to every member (1 round, 64 bits per word).

    Packing and unpacking are bit moves, XOR-linear, so they apply to shares.
    """
    n = b.size
    bits = np.zeros((2, -(-n // 64) * 64), dtype=np.uint64)
    np.bitwise_and(b.v.reshape(2, -1), np.uint64(1), out=bits[:, :n])
    packed = np.bitwise_or.reduce(bits.reshape(2, -1, 64) << _BIT_SHIFTS, axis=-1)
    got = yield from exchange(send={p.next: packed[0]}, expect={p.prev: packed.shape[1]})
    words = packed[0] ^ packed[1] ^ got[p.prev]
    out: U64 = ((words[:, None] >> _BIT_SHIFTS) & np.uint64(1)).reshape(-1)[:n]
    return out


class Arrangement:
    """The public state of a sort, flat over all rows.

    ``where[k]``: which shuffled value sits at position k. The live values (in segments of two
    or more that still need work) are kept compact, in position order: ``pos``, the first
    position ``start`` and length ``size`` of each one's segment, ``src`` (its index among the
    shuffled values) and ``keys``, the shares of their keys. A value's ``where`` entry is
    written when it leaves the live set, so the work per layer is proportional to the live
    values, not to n.
    """

    def __init__(self, keys: AShare, counts: npt.NDArray[np.int64], wanted: Index | None) -> None:
        rows, n = keys.shape
        pos = np.arange(rows * n, dtype=np.intp)
        row_start = (pos // n) * n
        valid = pos - row_start < np.repeat(counts, n)
        self.where: Index = pos.copy()
        self.wanted = wanted
        self.pos, self.start = pos[valid], row_start[valid]
        self.size = np.repeat(counts, n)[valid].astype(np.intp)
        self.src = self.pos.copy()
        self.keys: U64 = np.compress(valid, keys.v.reshape(2, -1), axis=1)
        self._keep(self.size >= 2)

    def _keep(self, live: npt.NDArray[np.bool_]) -> None:
        if self.wanted is not None:
            at = np.minimum(np.searchsorted(self.pos, self.wanted), max(self.pos.size - 1, 0))
            hit = at[self.pos[at] == self.wanted] if self.pos.size else at[:0]
            live &= np.isin(self.start, self.start[hit])
        done = ~live
        self.where[self.pos[done]] = self.src[done]
        self.pos, self.start, self.size = self.pos[live], self.start[live], self.size[live]
        self.src, self.keys = self.src[live], np.compress(live, self.keys, axis=1)

    def pairs(self, pivots: int) -> tuple[Index, Index]:
        """(element, pivot) indices into the live values: each live value with each pivot of
        its segment (the segment's first ``pivots`` values) other than itself."""
        offset = self.pos - self.start
        if pivots == 1:
            elem = np.flatnonzero(offset)
            return elem, elem - offset[elem]
        s = np.minimum(pivots, self.size)
        elem = np.repeat(np.arange(self.pos.size, dtype=np.intp), s)
        nth = np.arange(elem.size) - np.repeat(np.cumsum(s) - s, s)
        piv = elem - offset[elem] + nth
        keep = piv != elem
        return elem[keep], piv[keep]

    def split(self, pivots: int, elem: Index, less: U64) -> None:
        """Reorder the live segments by the opened bits ``less`` = [key(elem) < key(pivot)]."""
        if pivots == 1:
            self._split_one(elem, less)
            return
        below = np.bincount(elem[less == 0], minlength=self.pos.size)
        slot = 2 * below + (self.pos - self.start < np.minimum(pivots, self.size))
        # Stable: each segment stays where it is, its values ordered by slot.
        order = np.argsort(self.start * (2 * pivots + 1) + slot, kind="stable")
        self.keys, self.src, slot = np.take(self.keys, order, axis=1), self.src[order], slot[order]
        first = np.ones(self.pos.size, dtype=bool)
        first[1:] = (slot[1:] != slot[:-1]) | (self.start[1:] != self.start[:-1])
        run = np.cumsum(first) - 1
        self.start = self.pos[first][run]
        self.size = np.bincount(run)[run]
        self._keep(self.size >= 2)

    def _split_one(self, elem: Index, less: U64) -> None:
        """:meth:`split` for one pivot (quicksort), by counting instead of sorting: in each
        segment the values below the pivot keep their order at its front, then the pivot,
        then the others."""
        m = self.pos.size
        first = np.arange(m, dtype=np.intp) - (self.pos - self.start)  # live index of the pivot
        below = np.zeros(m, dtype=np.intp)
        above = np.zeros(m, dtype=np.intp)
        below[elem] = less.astype(np.intp)
        above[elem] = 1 - below[elem]
        before, after = np.cumsum(below), np.cumsum(above)
        n_below = np.take(before, first + self.size - 1) - np.take(before, first)
        dest = first + n_below  # the pivot's place
        dest += np.where(below == 1, before - np.take(before, first) - 1 - n_below, 0)
        dest += np.where(above == 1, after - np.take(after, first), 0)
        start = self.start + np.where(below == 1, 0, n_below + (above == 1))
        size = np.where(below == 1, n_below, np.where(above == 1, self.size - n_below - 1, 1))
        order = np.empty(m, dtype=np.intp)
        order[dest] = np.arange(m, dtype=np.intp)
        self.keys, self.src = np.take(self.keys, order, axis=1), np.take(self.src, order)
        self.start, self.size = np.take(start, order), np.take(size, order)
        self._keep(self.size >= 2)


def sort_shuffled(
    p: Party, keys: AShare, counts: npt.NDArray[np.int64], wanted: Index | None, pivots: int
) -> Protocol[Index]:
    """The sorting layers on keys already shuffled (shape (rows, n), distinct in each row).

    Returns the public arrangement: position r n + k holds the value of rank k of row r, as
    an index into the flattened keys (for every k < counts[r], or only at the flat positions
    ``wanted``, whose segments are then finished; others are left partly sorted).
    """
    state = Arrangement(keys, counts, wanted)
    while state.pos.size:
        elem, piv = state.pairs(pivots)
        diff = AShare(np.take(state.keys, elem, axis=1) - np.take(state.keys, piv, axis=1))
        less = yield from open_bits(p, (yield from msb_bool(p, diff)))
        state.split(pivots, elem, less)
    return state.where


def sort_rows(
    p: Party,
    x: AShare,
    counts: npt.ArrayLike | None = None,
    ranks: npt.ArrayLike | None = None,
    pivots: int | None = None,
) -> Protocol[AShare]:
    """Sort each row of x (last axis): shuffle, then :func:`sort_shuffled` on tie-broken keys.

    Values must satisfy |x| < 2^(62 - b) in the ring, b = :func:`index_bits` (n) (module
    docstring). ``counts`` (public, shape ``x.shape[:-1]``): sort only each row's leading
    values; the rest stay in place. ``ranks`` (public, shape ``x.shape[:-1] + (k,)``):
    only these ranks of each row need be right (a selection, far cheaper); the other
    positions hold the row's remaining values in no particular order.
    """
    shape = x.shape
    n = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    cnt = np.broadcast_to(np.asarray(n if counts is None else counts, dtype=np.int64), shape[:-1]).reshape(rows)
    wanted = None
    if ranks is not None:
        r = np.asarray(ranks, dtype=np.intp).reshape(rows, -1)
        if np.any((r < 0) | (r >= cnt[:, None])):
            raise ValueError("ranks must lie below each row's count")
        wanted = (r + n * np.arange(rows, dtype=np.intp)[:, None]).reshape(-1)
    flat = x.reshape(rows, n)
    position = np.broadcast_to(np.arange(n, dtype=np.uint64), (rows, n))
    keys = add_public(p, flat.lshift(index_bits(n)), position)
    keys, values = yield from shuffle(p, [keys, flat], cnt)
    where = yield from sort_shuffled(p, keys, cnt, wanted, pivots or (SORT_PIVOTS if ranks is None else SELECT_PIVOTS))
    return AShare(np.take(values.v.reshape(2, -1), where, axis=1).reshape(2, *shape))


def sort_reference(keys: Sequence[int], pivots: int, wanted: Sequence[int] | None = None) -> tuple[list[int], int]:
    """Plain reference for :func:`sort_shuffled` on one row of distinct plaintext keys:
    the same layers, segment by segment and element by element, recursively.

    Returns the arrangement (indices into ``keys``) and the number of comparisons opened.
    """
    compared = 0

    def arrange(segment: list[int], offset: int) -> list[int]:
        nonlocal compared
        if len(segment) < 2 or (wanted is not None and not any(offset <= w < offset + len(segment) for w in wanted)):
            return segment
        chosen = segment[:pivots]
        buckets: list[list[int]] = [[] for _ in range(len(chosen) + 1)]
        for e in segment:
            if e not in chosen:
                buckets[sum(keys[q] < keys[e] for q in chosen)].append(e)
        compared += len(segment) * len(chosen) - len(chosen)
        ranked = sorted(chosen, key=lambda q: keys[q])
        out: list[int] = []
        for c, bucket in enumerate(buckets):
            out += arrange(bucket, offset + len(out))
            if c < len(ranked):
                out.append(ranked[c])
        return out

    return arrange(list(range(len(keys))), 0), compared
