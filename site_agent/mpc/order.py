"""Order statistics on secret values: prefix products, oblivious sorts, quantiles, medians.

* :func:`prefix_prod`: inclusive prefix products along the last axis by the parallel scan of
  Hillis and Steele (CACM 1986): ceil(log2 n) steps, each one batched product over every
  position that has a partner s places back. (Prefix *sums* are local: ``AShare.cumsum``.)
* :func:`sort` and the quantiles have two algorithms. ``"shuffle"`` (the default) shuffles
  the values with a secret random permutation and then sorts with comparisons opened
  (:mod:`.samplesort`): O(log n) layers of 7 rounds, and a selection (a median) touches
  about 8 n comparisons; it needs values below 2^(62 - b) in magnitude, b the bit length of
  n - 1, to break ties by position. ``"network"`` is Batcher's odd-even merge sort (AFIPS
  1968) as a data-independent sorting network, for any value that :func:`lt` compares
  exactly, at O(log^2 n) layers of 11 rounds (841 rounds for the median of 10,000).
  A layer of the network is a set of disjoint comparators (i, j), i < j, each of which
  puts the smaller value at i; a layer costs ONE vectorized :func:`lt` over all its
  comparators (and over all rows of a batch) plus ONE product round for the swaps
  (min = lo + [hi < lo] (hi - lo), max = lo + hi - min). For n = 2^m the network has
  m (m + 1) / 2 layers and (m^2 - m + 4) 2^(m-2) - 1 comparators. Sizes that are not a
  power of two take the network of the next power of two with every comparator that
  touches a position >= n dropped: that is the network for the input padded with +inf,
  whose padding never moves. Which positions each layer touches is public (it depends
  only on n), so the sort reveals nothing.
* :func:`quantile`, :func:`median`: order statistics of the sorted values, at public
  positions that depend only on the (public) number of values. The shuffle sort then
  only finishes the segments that hold those ranks; the network is pruned to their
  dependency cone: a comparator is kept only if a kept comparator or a wanted output reads
  one of its wires later.

Quantile definitions follow numpy's ``method`` names (Hyndman and Fan, Am. Stat. 1996).
With sorted values s_0 <= ... <= s_{n-1} and virtual index h = (n - 1) q:

* ``"linear"`` (type 7, numpy's default): s_j + (h - j)(s_{j+1} - s_j), j = floor(h);
* ``"lower"`` / ``"higher"``: s_floor(h) / s_ceil(h) (exact order statistics);
* ``"nearest"``: s_round(h), ties to the even index as in numpy;
* ``"midpoint"``: (s_floor(h) + s_ceil(h)) / 2.

The median is q = 1/2: for even n, ``"linear"`` and ``"midpoint"`` give the mean of the
two middle values (numpy's ``median``), ``"lower"`` and ``"higher"`` the lower and upper
median. Order statistics are exact. An interpolated value is s_j + w (s_{j+1} - s_j) with
the public weight w rounded to ``fp.frac_bits`` bits and one truncation (error below one
unit 2^-f; none when w (s_{j+1} - s_j) is a multiple of 2^-f, e.g. the median of
integer-valued data). The weight is applied as a / 2^b in lowest terms, so the step needs
|a (s_{j+1} - s_j)| < 2^62 in the ring: for the median (a = 1, b = 1) any encodable values
of magnitude below 2^(61 - f); for any level, differences below ``fp.max_product``
(2^30 at f = 16) suffice.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from .arithmetic import constant, mul, mul_fixed, trunc
from .boolean import lt, select
from .fixed import TRUNC_LIMIT_BITS, FixedPoint
from .party import Party, Protocol
from .samplesort import sort_rows
from .shares import AShare

Method = Literal["linear", "lower", "higher", "nearest", "midpoint"]
Algorithm = Literal["shuffle", "network"]
Index = npt.NDArray[np.intp]
Layers = tuple[tuple[Index, Index], ...]

# Stands in for the missing values of a shorter row: above every value that encodes
# (|x| < 2^62 in the ring), and x - SENTINEL still fits a signed comparison.
SENTINEL = np.uint64(2**TRUNC_LIMIT_BITS - 1)


def prefix_prod(p: Party, x: AShare, fp: FixedPoint | None) -> Protocol[AShare]:
    """Inclusive prefix products along the last axis (Hillis and Steele scan).

    ceil(log2 n) product rounds of ``mul_fixed`` (or exact ring products ``mul`` for
    integers when ``fp`` is None). Every partial product must stay in the fixed-point
    range; with ``fp`` each output went through at most ceil(log2 n) truncations.
    """
    n = x.shape[-1]
    step = 1
    while step < n:
        head, tail, back = x[..., :step], x[..., step:], x[..., : n - step]
        prod = (yield from mul(p, tail, back)) if fp is None else (yield from mul_fixed(p, tail, back, fp.frac_bits))
        x = AShare.concat([head, prod], axis=len(x.shape) - 1)
        step *= 2
    return x


@lru_cache(maxsize=64)
def merge_sort_network(n: int, outputs: tuple[int, ...] | None = None) -> Layers:
    """Layers of Batcher's odd-even merge sort on n wires, as (lo, hi) index arrays.

    Iterative form: for p = 1, 2, 4, ... and k = p, p/2, ..., 1, compare a with a + k for
    every a with (a - k mod p) mod 2k < k and a, a + k in the same block of 2p. With
    ``outputs``, only the comparators that the listed output positions depend on are kept,
    and empty layers are dropped.
    """
    a = np.arange(n, dtype=np.intp)
    layers: list[tuple[Index, Index]] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            j0 = k % p
            ok = (a >= j0) & ((a - j0) % (2 * k) < k) & (a + k < n) & (a // (2 * p) == (a + k) // (2 * p))
            layers.append((a[ok], a[ok] + k))
            k //= 2
        p *= 2
    if outputs is None:
        return tuple(layers)
    needed = np.zeros(n, dtype=bool)
    needed[list(outputs)] = True
    kept: list[tuple[Index, Index]] = []
    for lo, hi in reversed(layers):
        use = needed[lo] | needed[hi]
        if use.any():
            kept.append((lo[use], hi[use]))
            needed[lo[use]] = needed[hi[use]] = True
    return tuple(reversed(kept))


def _apply_network(p: Party, x: AShare, layers: Layers) -> Protocol[AShare]:
    """Run comparator layers along the last axis of x (all leading axes are rows)."""
    v = x.v.copy()
    for lo, hi in layers:
        a, b = AShare(v[..., lo]), AShare(v[..., hi])
        swap = yield from lt(p, b, a)
        low = yield from select(p, swap, b, a)
        v[..., hi] = (a + b - low).v
        v[..., lo] = low.v
    return AShare(v)


def sort(p: Party, x: AShare, algorithm: Algorithm = "shuffle") -> Protocol[AShare]:
    """Sort ascending along the last axis (each row separately).

    ``"shuffle"``: values of magnitude below 2^(62 - b), b the bit length of n - 1
    (:mod:`.samplesort`). ``"network"``: Batcher's odd-even merge sort, for signed integers
    or fixed-point numbers of at most 62 bits (what :func:`lt` compares exactly), with
    O(log^2 n) layers of 11 rounds each.
    """
    if algorithm == "shuffle":
        return (yield from sort_rows(p, x))
    if algorithm != "network":
        raise ValueError(f"unknown sort algorithm {algorithm!r}")
    return (yield from _apply_network(p, x, merge_sort_network(x.shape[-1])))


def _positions(
    counts: npt.NDArray[np.int64], qs: npt.NDArray[np.float64], method: Method
) -> tuple[Index, Index, npt.NDArray[np.float64]]:
    """Public (lo, hi, weight) per row and quantile: value = s_lo + weight (s_hi - s_lo)."""
    h = (counts[..., None] - 1) * qs
    lo = np.floor(h)
    w = h - lo
    if method == "lower":
        w = np.zeros_like(w)
    elif method == "higher":
        lo, w = np.ceil(h), np.zeros_like(w)
    elif method == "nearest":
        lo, w = np.rint(h), np.zeros_like(w)
    elif method == "midpoint":
        w = np.where(w > 0, 0.5, 0.0)
    elif method != "linear":
        raise ValueError(f"unknown quantile method {method!r}")
    lo_i = lo.astype(np.intp)
    hi_i = np.minimum(lo_i + 1, counts[..., None] - 1).astype(np.intp)
    return lo_i, hi_i, w


def quantile(
    p: Party,
    x: AShare,
    q: float | Sequence[float],
    fp: FixedPoint,
    method: Method = "linear",
    counts: npt.ArrayLike | None = None,
    algorithm: Algorithm = "shuffle",
) -> Protocol[AShare]:
    """Quantiles of each row of x (last axis), with numpy's definitions (module docstring).

    ``q`` is one level in [0, 1] (result shape ``x.shape[:-1]``) or a sequence of levels
    (result shape ``x.shape[:-1] + (len(q),)``), all computed from one sort. ``counts``
    (public, shape ``x.shape[:-1]``) gives how many leading values of each row count, for
    groups of different sizes padded to a common length; the rest of a row is ignored.
    Values are fixed-point numbers in ``fp`` (integer-valued data encoded with ``fp`` gives
    exact medians); for ``"lower"``, ``"higher"`` and ``"nearest"`` any encoding works.
    ``algorithm`` chooses the sort (see :func:`sort` for the range each one needs).
    """
    n = x.shape[-1]
    rows = x.shape[:-1]
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if n == 0 or qs.ndim != 1 or not np.all((qs >= 0) & (qs <= 1)):
        raise ValueError("quantiles need a non-empty last axis and levels in [0, 1]")
    cnt = np.broadcast_to(np.asarray(n if counts is None else counts, dtype=np.int64), rows)
    if not np.all((cnt >= 1) & (cnt <= n)):
        raise ValueError(f"counts must lie in [1, {n}]")
    lo, hi, w = _positions(cnt, qs, method)
    if algorithm == "shuffle":
        s = yield from sort_rows(p, x, cnt, np.concatenate([lo, hi], axis=-1))
    elif algorithm == "network":
        if counts is not None:
            valid = np.arange(n) < cnt[..., None]
            x = x.mul_public(valid.astype(np.uint64)) + constant(p, np.where(valid, np.uint64(0), SENTINEL), AShare)
        layers = merge_sort_network(n, tuple(np.unique(np.concatenate([lo.ravel(), hi.ravel()])).tolist()))
        s = yield from _apply_network(p, x, layers)
    else:
        raise ValueError(f"unknown sort algorithm {algorithm!r}")
    s_lo = AShare(np.take_along_axis(s.v, lo[None], axis=-1))
    s_hi = AShare(np.take_along_axis(s.v, hi[None], axis=-1))
    out = s_lo
    weight = np.rint(w * 2**fp.frac_bits).astype(np.int64)
    if np.any(weight > 0):
        unit = int(np.min(weight[weight > 0] & -weight[weight > 0]))  # largest common power of two
        bits = fp.frac_bits - unit.bit_length() + 1
        step = (s_hi - s_lo).mul_public(weight // unit)
        out = s_lo + ((yield from trunc(p, step, bits)) if bits else step)
    return out if np.ndim(q) else out[..., 0]


def median(
    p: Party,
    x: AShare,
    fp: FixedPoint,
    method: Method = "linear",
    counts: npt.ArrayLike | None = None,
    algorithm: Algorithm = "shuffle",
) -> Protocol[AShare]:
    """Median of each row (numpy's ``median`` with the default ``"linear"``; see module)."""
    return (yield from quantile(p, x, 0.5, fp, method, counts, algorithm))
