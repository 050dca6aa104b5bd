"""Cell suppression on shares: primary (pooled count below k) and secondary (no differencing).

Primary: a cell is suppressed when its pooled count is below the minimum cell size k, decided
by one vectorized comparison of every support count of every cell with k.

Secondary: when a query releases margins (ROLLUP/CUBE), a line (a parent cell and the children
that add up to it) with exactly one suppressed cell would let anyone recover it by subtraction.
Each pass finds, on shares, the lines with exactly one suppressed cell and suppresses in each the
smallest unsuppressed cell (by count; ties to the first), all lines and supports at once. After
a fixed number of passes, any support that still has such a line is suppressed entirely: the
result is always safe, and the number of rounds never depends on the data. Only the final flags
are revealed (a declared reveal point).
"""

from __future__ import annotations

import numpy as np

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare
from .cells import Index

_BIG = 1 << 30  # above every count (counts stay below 2^24)


def _const(p: Party, values: object, shape: tuple[int, ...]) -> AShare:
    arr = np.broadcast_to(np.asarray(values, dtype=np.int64).view(np.uint64), shape).copy()
    return ar.constant(p, arr, AShare)


def suppress(p: Party, counts: AShare, primary: AShare, k: int, lines: Index, passes: int) -> Protocol[AShare]:
    """Suppression flags (0/1 shares) for ``counts`` of shape (rows, cells), starting from the
    ``primary`` flags the release rule decided (:func:`site_agent.privacy.checks.stopped`)."""
    flags = primary
    if lines.size == 0:
        return flags
    for _ in range(passes):
        flags = yield from _secondary_pass(p, flags, counts, lines)
    need = yield from _lines_with_one(p, flags, lines)
    bad = yield from bo.lt(p, _const(p, 0, (counts.shape[0],)), need.sum(axis=1))
    everything = AShare(np.repeat(bad.v[..., None], counts.shape[1], axis=-1))
    both = yield from ar.mul(p, flags, everything)
    return flags + everything - both


def _gather(x: AShare, lines: Index) -> AShare:
    """x (S, cells) at the line positions (S, L, W); padding reads an appended zero."""
    padded = np.concatenate([x.v, np.zeros_like(x.v[..., :1])], axis=-1)
    idx = np.where(lines >= 0, lines, padded.shape[-1] - 1)
    return AShare(padded[:, :, idx])


def _lines_with_one(p: Party, flags: AShare, lines: Index) -> Protocol[AShare]:
    """[exactly one suppressed cell in the line], shape (S, L)."""
    count = _gather(flags, lines).sum(axis=2)
    return (yield from bo.eq(p, count, _const(p, 1, count.shape)))


def _secondary_pass(p: Party, flags: AShare, counts: AShare, lines: Index) -> Protocol[AShare]:
    s, width = flags.shape[0], lines.shape[1]
    need = yield from _lines_with_one(p, flags, lines)
    valid = (lines >= 0).astype(np.int64)
    f, n = _gather(flags, lines), _gather(counts, lines)
    open_cells = _const(p, 1, f.shape) - f
    # BIG - n for open cells, 0 for suppressed cells and padding: the maximum is the smallest
    # open cell whenever the line needs one (it then has at least one open cell).
    score = yield from ar.mul(p, open_cells, _const(p, _BIG, n.shape) - n)
    score = score.mul_public(valid)
    _, arg = yield from bo.maximum(p, score)
    position = _const(p, np.arange(width, dtype=np.int64), (s, lines.shape[0], width))
    onehot = yield from bo.eq(p, AShare(np.repeat(arg.v[..., None], width, axis=-1)), position)
    add = yield from ar.mul(p, AShare(np.repeat(need.v[..., None], width, axis=-1)), onehot)
    added = np.zeros((2, s, flags.shape[1] + 1), dtype=np.uint64)
    idx = np.where(lines >= 0, lines, flags.shape[1])
    for c in range(2):
        np.add.at(added[c], (slice(None), idx), add.v[c])  # type: ignore[arg-type]
    total = flags + AShare(added[..., :-1])
    return (yield from bo.lt(p, _const(p, 0, total.shape), total))
