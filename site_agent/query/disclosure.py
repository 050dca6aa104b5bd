"""Cell suppression: on shares per line, then a public check of the opened pattern.

The rule (docs/privacy-suppression.md): every released number is over a set of 0 or at least
k persons, and so is every set whose size follows from released numbers of the same query by
subtraction. For each support count (a row of ``counts``) and output cell:

* **empty** (count 0): safe, released as 0 (its means and variances are NULL). An empty cell
  never protects another one: everybody knows it holds 0.
* **primary**: a count 1 <= n < k is suppressed.
* **secondary**: in a line (a parent and the children that add up to it) whose parent is
  released, the suppressed children's total follows by subtraction, so it must be 0 or at
  least k, and a line never has exactly one suppressed cell (its value would follow). Each
  pass finds, on shares, every line that breaks either rule and suppresses its smallest open
  non-empty child (ties: the first; the parent if no child is left), all lines and supports in
  one batch. After a fixed number of passes, a support that still has such a line is suppressed
  wholesale (its empty cells stay released). The number of rounds never depends on the data.

The flags are opened to the committee (a declared reveal point): :data:`RELEASED`,
:data:`SUPPRESSED` or :data:`EMPTY` per support and cell. From then on the pattern is public, and
:func:`close_pattern` checks the combinations of lines (two-way CUBE tables, SITE margins) in the
clear, deciding from the pattern alone: a support where some suppressed cell's count is
determined by the released cells through the lines' additive relations is suppressed
wholesale. Deciding from public information reveals nothing more.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare
from .cells import Index

RELEASED, SUPPRESSED, EMPTY = 0, 1, 2
_BIG = 1 << 30  # above every count (counts stay below 2^24)


def _const(p: Party, values: object, shape: tuple[int, ...]) -> AShare:
    arr = np.broadcast_to(np.asarray(values, dtype=np.int64).view(np.uint64), shape).copy()
    return ar.constant(p, arr, AShare)


def _small(p: Party, x: AShare, k: npt.ArrayLike) -> Protocol[tuple[AShare, AShare]]:
    """([1 <= x < k], [x == 0]) for counts x, ``k`` one bound or one per row of x, from one batch
    of comparisons (a negative count, a site's out-of-range penalty, is neither)."""
    rows = len(x)
    bound = np.broadcast_to(np.asarray(k, dtype=np.int64), (rows,))
    limits = np.concatenate([bound, np.ones(rows, dtype=np.int64), np.zeros(rows, dtype=np.int64)])
    limits = limits.reshape(-1, *([1] * (len(x.shape) - 1)))
    below = yield from bo.lt(p, AShare.concat([x, x, x]), _const(p, limits, (3 * rows, *x.shape[1:])))
    zero = below[rows : 2 * rows] - below[2 * rows :]
    return below[:rows] - below[rows : 2 * rows], zero


def suppress(
    p: Party, counts: AShare, primary: AShare, empty: AShare, k: int, lines: Index, passes: int
) -> Protocol[AShare]:
    """Flags (shares of 0 released, 1 suppressed, 2 empty) for ``counts`` of shape (rows, cells),
    from the ``primary`` flags the release rule decided and the shares of [count == 0], both from
    the release rule's comparison batch (:func:`site_agent.privacy.checks.stopped`).

    ``lines`` are the cells' lines (parent first, children, padding -1; see ``Cells.lines``).
    """
    flags = primary - (yield from ar.mul(p, primary, empty))  # an empty cell is marked empty, not suppressed
    if lines.size == 0:
        return flags + empty.mul_public(EMPTY)
    for _ in range(passes):
        flags = yield from _secondary_pass(p, flags, empty, counts, k, lines)
    bad = yield from _bad_lines(p, flags, counts, k, lines)
    s, cells = counts.shape
    any_bad = yield from bo.lt(p, _const(p, 0, (s,)), bad.sum(axis=1))
    everything = AShare(np.repeat(any_bad.v[..., None], cells, axis=-1))
    both = yield from ar.mul(
        p, AShare.concat([everything, everything]), AShare.concat([_const(p, 1, (s, cells)) - empty, flags])
    )
    flags = flags + both[:s] - both[s:]  # flags OR (everything AND NOT empty): flags never mark empty cells
    return flags + empty.mul_public(EMPTY)


def _gather(x: AShare, at: Index) -> AShare:
    """x (S, cells) at the positions ``at`` (L, W) as (S, L, W); padding reads an appended zero."""
    padded = np.concatenate([x.v, np.zeros_like(x.v[..., :1])], axis=-1)
    idx = np.where(at >= 0, at, padded.shape[-1] - 1)
    return AShare(padded[:, :, idx])


def _bad_lines(p: Party, flags: AShare, counts: AShare, k: int, lines: Index) -> Protocol[AShare]:
    """Lines (S, L) that give a suppressed value away. With the parent released: the suppressed
    children's total is in 1..k-1 (it follows by subtraction), or one child alone is suppressed
    (its value follows). With the parent suppressed: no child is (the parent is their sum)."""
    s = flags.shape[0]
    f = _gather(flags, lines[:, 1:])
    hidden = (yield from ar.mul(p, f, _gather(counts, lines[:, 1:]))).sum(axis=2)
    small, none = yield from _small(p, AShare.concat([hidden, f.sum(axis=2)]), [k] * s + [2] * s)
    small, one, none = small[:s], small[s:], none[:s]  # suppressed cells are never empty: 0 is none
    either = small + one - (yield from ar.mul(p, small, one))
    parent = AShare(flags.v[:, :, lines[:, 0]])
    return either + (yield from ar.mul(p, parent, none - either))


def _secondary_pass(p: Party, flags: AShare, empty: AShare, counts: AShare, k: int, lines: Index) -> Protocol[AShare]:
    """Suppress, in every bad line, its smallest open non-empty child (ties: the first), or its
    parent when no child is open and non-empty; all lines and supports in one batch.

    A bad line always has one of them: a suppressed parent is not empty, so when none of its
    children is suppressed one of them is open and non-empty; a released parent is suppressed
    once all its non-empty children are."""
    s, width = flags.shape[0], lines.shape[1]
    bad = yield from _bad_lines(p, flags, counts, k, lines)
    f, n = _gather(flags, lines), _gather(counts, lines)
    candidate = (_const(p, 1, f.shape) - f - _gather(empty, lines)).mul_public((lines >= 0).astype(np.int64))
    # BIG - n for a child, 1 for the parent: the maximum score is the smallest candidate child,
    # or the parent when there is none.
    weight = np.concatenate([_const(p, 1, (s, len(lines), 1)).v, (_const(p, _BIG, n.shape) - n).v[..., 1:]], axis=-1)
    score = yield from ar.mul(p, candidate, AShare(weight))
    _, arg = yield from bo.maximum(p, score)
    position = _const(p, np.arange(width, dtype=np.int64), (s, len(lines), width))
    onehot = yield from bo.eq(p, AShare(np.repeat(arg.v[..., None], width, axis=-1)), position)
    add = yield from ar.mul(p, AShare(np.repeat(bad.v[..., None], width, axis=-1)), onehot)
    added = np.zeros((2, s, flags.shape[1] + 1), dtype=np.uint64)
    idx = np.where(lines >= 0, lines, flags.shape[1])
    for c in range(2):
        np.add.at(added[c], (slice(None), idx), add.v[c])  # type: ignore[arg-type]
    total = flags + AShare(added[..., :-1])
    return (yield from bo.lt(p, _const(p, 0, total.shape), total))


# -- the public check of the opened pattern ------------------------------------------------


def close_pattern(flags: npt.NDArray[np.uint64], lines: Index) -> npt.NDArray[np.uint64]:
    """The opened flags (supports, cells) with every support that has a determined suppressed
    cell suppressed wholesale (its empty cells stay released as empty). Public, deterministic:
    every member computes the same from the same opened pattern."""
    out = flags.copy()
    for s in range(flags.shape[0]):
        if determined(flags[s] == SUPPRESSED, lines).any():
            out[s] = np.where(flags[s] == EMPTY, EMPTY, SUPPRESSED)
    return out


def determined(hidden: npt.NDArray[np.bool_], lines: Index) -> npt.NDArray[np.bool_]:
    """For each cell, whether it is hidden and its value follows from the other cells' values
    through the lines (parent = sum of children), in exact integer arithmetic.

    The line equations restricted to the hidden cells form a matrix A; hidden cell j is
    determined exactly when the unit vector e_j is in A's row space, that is when a row of A's
    reduced row echelon form is e_j. The hidden cells split into independent blocks (connected
    through shared lines), each reduced on its own."""
    out = np.zeros(hidden.shape, dtype=bool)
    unknown = np.flatnonzero(hidden)
    if unknown.size == 0 or lines.size == 0:
        return out
    column = np.full(hidden.size + 1, -1, dtype=np.int64)  # the last entry serves the padding
    column[unknown] = np.arange(unknown.size)
    at = column[np.where(lines >= 0, lines, hidden.size)]  # (L, W): unknown's column or -1
    sign = np.ones(lines.shape, dtype=np.int64)
    sign[:, 0] = -1  # children minus parent = 0
    a = np.zeros((len(lines), unknown.size), dtype=np.int64)
    row = np.repeat(np.arange(len(lines)), lines.shape[1]).reshape(lines.shape)
    use = at >= 0
    np.add.at(a, (row[use], at[use]), sign[use])
    a = a[(a != 0).any(axis=1)]
    for block in _blocks(a != 0):
        cols = np.flatnonzero(block)
        sub = a[:, cols]
        found = _unit_rows(sub[(sub != 0).any(axis=1)])
        out[unknown[cols[found]]] = True
    return out


def _blocks(linked: npt.NDArray[np.bool_]) -> list[npt.NDArray[np.bool_]]:
    """The columns of ``linked`` (rows x columns) in groups connected through shared rows:
    each column takes the smallest label of any column it shares a row with, until stable."""
    label = np.arange(linked.shape[1])
    top = linked.shape[1]
    while True:
        row_min = np.where(linked, label[None, :], top).min(axis=1, initial=top)
        new = np.minimum(label, np.where(linked, row_min[:, None], top).min(axis=0, initial=top))
        if (new == label).all():
            return [label == b for b in np.unique(label)]
        label = new


def _unit_rows(a: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Columns j such that e_j is in the row space of the integer matrix ``a``.

    Exact Gauss-Jordan elimination over the integers (Python ints, so nothing overflows): each
    pivot step updates only the rows with a non-zero entry in the pivot column, as
    ``pivot * row - entry * pivot_row``, then divides those rows by their gcd. Row spaces over
    the rationals are unchanged by these steps, and the result is the reduced echelon form up to
    a non-zero factor per row."""
    m = a.astype(object)
    rows, cols = m.shape
    rank = 0
    for c in range(cols):
        nonzero = np.flatnonzero(m[rank:, c] != 0)
        if nonzero.size == 0:
            continue
        pivot = rank + int(nonzero[0])
        m[[rank, pivot]] = m[[pivot, rank]]
        target = np.flatnonzero(m[:, c] != 0)
        target = target[target != rank]
        if target.size:
            update = m[target] * m[rank, c] - np.outer(m[target, c], m[rank])
            divisor = np.gcd.reduce(update, axis=1)
            m[target] = update // np.where(divisor == 0, 1, divisor)[:, None]
        rank += 1
        if rank == rows:
            break
    reduced = m[:rank] != 0
    found = np.zeros(cols, dtype=bool)
    found[np.argmax(reduced[reduced.sum(axis=1) == 1], axis=1)] = True
    return found
