"""The release rule's checks on shares: which cells a release row must not open.

A row's cells are stopped where any of its counts (query-set sizes, non-NULL counts, pair
differences; :mod:`site_agent.privacy.release`) holds 1 to k-1 persons, or any of its 0/1 flags
is set. Everything is one batch: two comparisons of every count (x < k and x < 1, so that
``[1 <= x < k] = [x < k] - [x < 1]`` needs no multiplication) and one comparison of the per-row
totals, whatever the number of rows, counts and cells. Nothing is opened here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare


def _const(p: Party, value: int, shape: tuple[int, ...]) -> AShare:
    return ar.constant(p, np.full(shape, value, dtype=np.int64).view(np.uint64), AShare)


def few_sites(p: Party, rows: AShare, min_sites: int) -> Protocol[AShare]:
    """0/1 shares per cell: 1 where fewer than ``min_sites`` sites have a row in the cell (policy
    ``min_sites``). ``rows`` holds each site's row count per output cell, shape (cells, sites),
    margins formed per site first, so a margin counts the sites with a row anywhere below it.
    Two batched comparisons: [n > 0] for every site and cell, then the per-cell sum < min_sites."""
    cells, sites = rows.shape
    present = yield from bo.lt(p, _const(p, 0, (cells, sites)), rows)
    return (yield from bo.lt(p, present.sum(axis=1), _const(p, min_sites, (cells,))))


_OR_TERMS = 16
"""Up to this many 0/1 tests per row are combined by products (a or b = a + b - ab: one round
per halving, 4 at most) rather than by comparing their sum with 1 (7 rounds)."""


def _any(p: Party, terms: Sequence[Sequence[AShare]]) -> Protocol[AShare]:
    """(rows, cells) shares of [any of row r's 0/1 ``terms`` is 1]: a tree of products, one batch
    per level for all rows at once."""
    rows = [list(t) for t in terms]
    while any(len(t) > 1 for t in rows):
        left = [t[i] for t in rows for i in range(0, len(t) - 1, 2)]
        right = [t[i + 1] for t in rows for i in range(0, len(t) - 1, 2)]
        both = yield from ar.mul(p, AShare.concat(left), AShare.concat(right))
        cells, at, out = left[0].shape[0], 0, []
        for t in rows:
            pairs = len(t) // 2
            merged = [t[2 * i] + t[2 * i + 1] - both[(at + i) * cells : (at + i + 1) * cells] for i in range(pairs)]
            out.append(merged + t[2 * pairs :])
            at += pairs
        rows = out
    return AShare.concat([t[0] for t in rows]).reshape(len(rows), -1)


def stopped(
    p: Party,
    checks: Sequence[Sequence[AShare]],
    strict: Sequence[Sequence[AShare]],
    flags: Sequence[Sequence[AShare]],
    k: int,
    support: AShare,
    extra: AShare | None = None,
    sets: Sequence[Sequence[int]] = (),
    check_k: Sequence[Sequence[int]] | None = None,
    extra_k: int | None = None,
) -> Protocol[tuple[AShare, AShare]]:
    """(rows, cells) 0/1 shares: 1 where a row's counts or flags forbid opening the cell; and, for
    the rows' ``support`` counts (rows, cells), 0/1 shares of [support == 0] from the same
    comparison batch (what secondary suppression needs: :func:`site_agent.query.disclosure.suppress`).

    For row r: any of ``checks[r]`` in 1..k-1 (or negative), any of ``strict[r]`` in 0..k-1, any of
    ``flags[r]`` set (a flag is 0 or a positive count), each of shape (cells,); and, for each
    query set j in ``sets[r]``, any of ``extra[j, cell]`` (shape (query sets, cells, m):
    differences with the m remembered sets, :mod:`site_agent.privacy.ledger`) in 1..k-1.
    Without flags or remembered sets, a row's few 0/1 tests are combined by products
    (:func:`_any`); otherwise their sum is compared with 1.

    ``check_k`` (per row, one per check) replaces k for ``checks``: 1 tests a count for a
    negative value only (what stays withheld after a DPO's approval:
    :func:`site_agent.privacy.release.approval_bounds`). ``extra_k`` replaces k for the
    differences with remembered sets (a linkage statement's larger bound, whose sets count
    persons across sites: :func:`site_agent.linkage.statement.ledger_bound`).
    """
    cells = checks[0][0].shape[0]
    listed = AShare.concat([c for row in checks for c in row])
    flat = listed if extra is None else AShare.concat([listed, extra.reshape(-1)])
    n = flat.shape[0]
    strict_flat = [c for row in strict for c in row]
    counts = AShare.concat([flat, flat, flat, *strict_flat, support.reshape(-1), support.reshape(-1)])
    if check_k is None and extra_k is None:
        upper = _const(p, k, (n,))
    else:  # each check's own bound, repeated over its cells; the ledger's differences use extra_k
        if check_k is None:
            bounds = np.full(listed.shape[0], k, dtype=np.int64)
        else:
            bounds = np.repeat(np.asarray([b for row in check_k for b in row], dtype=np.int64), cells)
        last = k if extra_k is None else extra_k
        bounds = np.concatenate([bounds, np.full(n - bounds.size, last, dtype=np.int64)])
        upper = ar.constant(p, bounds.view(np.uint64), AShare)
    limits = [upper, _const(p, 1, (n,)), _const(p, 0, (n,))]
    limits += [_const(p, k, (cells,)) for _ in strict_flat]
    limits += [_const(p, 1, (support.size,)), _const(p, 0, (support.size,))]
    below = yield from bo.lt(p, counts, AShare.concat(limits))
    size, end = support.size, below.shape[0]
    empty = (below[end - 2 * size : end - size] - below[end - size :]).reshape(*support.shape)
    # [1 <= x < k] = [x < k] - [x < 1]; a negative count (a site's out-of-range penalty,
    # site_agent.query.failsafe) stops the cell too: + [x < 0]
    bad = below[:n] - below[n : 2 * n] + below[2 * n : 3 * n]
    terms: list[list[AShare]] = []  # per row, its 0/1 tests
    at, at_strict = 0, 3 * n
    for row, row_strict in zip(checks, strict, strict=True):
        terms.append([bad[(at + i) * cells : (at + i + 1) * cells] for i in range(len(row))])
        terms[-1] += [below[at_strict + j * cells : at_strict + (j + 1) * cells] for j in range(len(row_strict))]
        at, at_strict = at + len(row), at_strict + len(row_strict) * cells
    if extra is None and not any(flags) and max(len(t) for t in terms) <= _OR_TERMS:
        return (yield from _any(p, terms)), empty
    totals = []
    for row_terms, row_flags in zip(terms, flags, strict=True):
        total = AShare.concat(row_terms).reshape(len(row_terms), cells).sum(axis=0)
        for f in row_flags:
            total = total + f
        totals.append(total)
    if extra is not None:
        count, _, m = extra.shape
        remembered = bad[at * cells :].reshape(count, cells, m).sum(axis=2)
        totals = [t + remembered[list(js)].sum(axis=0) for t, js in zip(totals, sets, strict=True)]
    total = AShare.concat(totals).reshape(len(checks), cells)
    none = yield from bo.lt(p, total, _const(p, 1, total.shape))
    return _const(p, 1, total.shape) - none, empty


def approval_stops(p: Party, rule: AShare, hard: AShare, persons: AShare, k: int) -> Protocol[AShare]:
    """(rows, cells) 0/1 shares of what still stops a cell once a data-protection officer approved
    releasing what the release rule withheld (docs/review-and-report.md): in a cell of 1 to k-1
    persons (``persons``, per cell), only the ``hard`` stops (a difference, too few sites, a
    quantile bin, a failure: :func:`site_agent.privacy.release.approval_bounds`); in any other
    cell the release rule's own stops (``rule``), so that a small branch, a small non-NULL count
    or a dominated sum inside a large cell, which the DPO's band of the cell's size would not
    show, is never released. ``hard`` is at most ``rule``, so the result is
    ``rule - small * (rule - hard)``: one comparison batch and one multiplication."""
    rows, cells = rule.shape
    below = yield from bo.lt(
        p, AShare.concat([persons, persons]), AShare.concat([_const(p, k, (cells,)), _const(p, 1, (cells,))])
    )
    small = below[:cells] - below[cells:]
    spread = AShare(np.repeat(small.v[:, None, :], rows, axis=1))
    return rule - (yield from ar.mul(p, spread, rule - hard))


def ledger_stops(p: Party, extra: AShare, k: int) -> Protocol[AShare]:
    """(query sets, cells) 0/1 shares: 1 where a pooled difference ``extra[j, cell, :]`` with some
    remembered set holds 1 to k-1 persons; for statements whose sets have no other check here
    (model statements, :mod:`site_agent.agent.models`). The rule of :func:`stopped`, run with
    nothing but the remembered sets (a zero count passes every other test)."""
    sets, cells, _ = extra.shape
    zero = _const(p, 0, (cells,))
    stop, _ = yield from stopped(
        p,
        [[zero] for _ in range(sets)],
        [[] for _ in range(sets)],
        [[] for _ in range(sets)],
        k,
        _const(p, 0, (sets, cells)),
        extra,
        [[j] for j in range(sets)],
    )
    return stop
