"""A secret random permutation of replicated shares: the three-party resharing shuffle.

Every member ends up with shares of the same columns, permuted along the last axis by a
permutation pi that no single member knows. pi = pi_2 . pi_1 . pi_0 is composed of three
passes; pass j applies pi_j, a permutation derived from the pairwise PRF key K_j, so its
two holders (members j - 1 and j) know pi_j and the third (member j + 1) does not. Every
member misses one of the three factors, and a uniform permutation composed with anything
independent of it is uniform: pi looks uniform to each member. This is the shuffle of
replicated shares by successive resharings among pairs (Laur, Willemson and Zhang, ISC 2011,
"Round-efficient oblivious database manipulation"; Asharov, Hamada, Ikarashi, Kikuchi,
Nof, Pinkas, Takahashi and Tomida, CCS 2022, "Efficient secure three-party sorting with
applications to data analysis and heavy hitters").

One pass, with A = j - 1, B = j (the holders of K_j) and C = j + 1, on x = x_0 + x_1 + x_2:

1. A holds (x_{j-1}, x_j) and B holds (x_j, x_{j+1}): a = x_{j-1} + x_j and b = x_{j+1} are an
   additive sharing of x between A and B (local).
2. Both permute their part by pi_j (local).
3. Back to replicated sharing: y_{j-1} is a fresh draw from K_{j-1} (held by A and C) and
   y_{j+1} one from K_{j+1} (held by B and C). A sends B pi_j(a) - y_{j-1}; B sends A
   pi_j(b) - y_{j+1}; both add them to get y_j = pi_j(x) - y_{j-1} - y_{j+1}.

One round per pass, n words each from A and B, nothing to or from C: three rounds, 2n words
per member in all. Each message is masked by a fresh draw from the key its receiver lacks,
so what a member receives is uniform; C receives nothing at all in the pass whose
permutation it does not know.

A permutation is the stable argsort of n PRF words; with ``counts``, positions from a row's
count onwards (padding) are kept in place and only the leading ``count`` values of each row
are permuted among themselves (:func:`permutation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .party import Party, Protocol, exchange
from .ring import U64
from .shares import AShare

Index = npt.NDArray[np.intp]
_TOP = np.uint64(1 << 63)


def permutation(words: U64, counts: npt.NDArray[np.int64]) -> Index:
    """A permutation of each row of ``words`` (shape (rows, n)) from its PRF words.

    Row r's first ``counts[r]`` positions are permuted by the stable argsort of their words
    (with the top bit cleared); later positions get the top bit and stay in place.
    """
    n = words.shape[-1]
    pad = np.arange(n) >= counts[:, None]
    keyed = np.where(pad, _TOP | np.arange(n, dtype=np.uint64), words >> np.uint64(1))
    return np.argsort(keyed, axis=-1, kind="stable")


def _rows(shape: tuple[int, ...], counts: npt.ArrayLike | None) -> tuple[int, int, npt.NDArray[np.int64]]:
    n = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    cnt = np.broadcast_to(np.asarray(n if counts is None else counts, dtype=np.int64), shape[:-1]).reshape(rows)
    if np.any((cnt < 0) | (cnt > n)):
        raise ValueError(f"counts must lie in [0, {n}]")
    return rows, n, cnt


def shuffle(p: Party, columns: Sequence[AShare], counts: npt.ArrayLike | None = None) -> Protocol[list[AShare]]:
    """The columns (all of one shape (..., n)), each row permuted by the same secret pi.

    Every column goes through the same permutation (so rows of a table stay together);
    each row of the leading axes gets its own. ``counts`` (public, shape ``shape[:-1]``)
    limits each row's permutation to its leading values. Three rounds (module docstring).
    """
    if not columns:
        return []
    shape = columns[0].shape
    if any(c.shape != shape for c in columns) or not shape:
        raise ValueError("shuffled columns must share one shape with a last axis")
    rows, n, cnt = _rows(shape, counts)
    k = len(columns)
    # Layout (column, component, row, n): each column's shares are one contiguous block, so the
    # results are views (no copy per column), and each pass writes its new shares in place.
    v = np.empty((k, 2, rows, n), dtype=np.uint64)
    for c, column in enumerate(columns):
        v[c] = column.v.reshape(2, rows, n)
    size = k * rows * n
    i = p.index
    for j in (0, 1, 2):
        a_member, b_member = (j + 2) % 3, j
        new = np.empty_like(v)
        if i in (a_member, b_member):
            perm = permutation(p.rand.stream(j, rows * n).reshape(rows, n), cnt)
            mine = np.take_along_axis(v[:, 0] + v[:, 1] if i == a_member else v[:, 1], perm[None], axis=-1)
            mask = p.rand.stream((j + 2) % 3 if i == a_member else (j + 1) % 3, size).reshape(k, rows, n)
            send = np.subtract(mine, mask, out=mine).reshape(-1)
            other = b_member if i == a_member else a_member
            got = yield from exchange(send={other: send}, expect={other: size})
            kept, fresh = (0, 1) if i == a_member else (1, 0)  # A: (mask, y_j); B: (y_j, mask)
            new[:, kept] = mask
            np.add(send.reshape(k, rows, n), got[other].reshape(k, rows, n), out=new[:, fresh])
        else:  # C: its new components are the two fresh draws, in its order (y_{j+1}, y_{j-1})
            new[:, 0] = p.rand.stream((j + 1) % 3, size).reshape(k, rows, n)
            new[:, 1] = p.rand.stream((j + 2) % 3, size).reshape(k, rows, n)
        v = new
    return [AShare(v[c].reshape(2, *shape)) for c in range(k)]
