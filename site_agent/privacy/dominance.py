"""The dominance rule for sums (policy ``dominance = [n, p]``): no released total a few persons make.

A SUM (or AVG, variance, rate's person-time) over k or more persons can still give one person's
value away when that person makes nearly all of it: with everybody else's values near a typical
one, ``SUM - (count - 1) * typical`` is the large value. The (n, p) rule of statistical agencies
(Hundepool et al., *Statistical Disclosure Control*, Wiley 2012, section 4.2; tau-argus's
"dominance rule") calls a cell *sensitive* when its n largest contributions make more than p
percent of its total, and withholds it:

    top_n * 100 > p * total

Contributions are per person (a person's rows in the cell summed first) and measured as absolute
values; ``total`` is the sum of every person's absolute contribution. A row's contribution is
the *column part* of the aggregate's argument: for a plain contribution ``a * x + b`` it is
``a * x`` (:func:`contribution`). The offset is public arithmetic on counts (``SUM(x + 1e6)`` is
``SUM(x) + 1e6 * COUNT(x)``), so measuring with it would let an analyst drown any dominant
value in constants.

How it is computed, never opening a contribution:

* **At each site, in the clear** (:func:`site_top`): from the plan's local query (one row per
  cell and person, the person's summed contribution), for every output cell (ROLLUP/CUBE margins
  included, so a person's rows in several cells add up before the ranking) the site's n largest
  absolute contributions in descending order, padded with zeros, and its total of absolute
  contributions. Both are secret-shared. A person treated at two sites is two persons here,
  as in the ledger.
* **On shares** (:func:`dominated`): the pooled n largest of S sites' sorted lists is the best
  split of n among the sites: top_n = max over i_1 + ... + i_S = n of P_1(i_1) + ... + P_S(i_S),
  P_s(i) the sum of site s's i largest (a prefix sum: local). Every split is a possible choice of
  n persons and the best choice takes a prefix of each site's list, so the maximum is exact. So
  the cell is sensitive exactly when some split passes the test, and all splits of all cells go
  through ONE batch of comparisons ``p * total < 100 * P(split)``; the number of splits that
  pass (0: not sensitive) becomes a flag of the release rule (:func:`site_agent.privacy.checks.stopped`),
  which withholds the cell like any other, and secondary suppression then protects it. With
  S = 3 sites there are (n + 1)(n + 2) / 2 splits per cell.

Strictest wins: the combined policy uses the largest n and the smallest p of any site. That rule
withholds every cell any site's own rule would: the n largest make at least what any fewer of
the largest make, and more than p_s percent is more than any smaller p.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlglot.expressions as exp

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare
from .contributions import Branch

MAX_N = 10
"""Largest n a policy may ask for (the splits per cell grow as n^(sites - 1))."""

MAX_CHECKS = 32
"""Most contributions (sums and differences of sums) one query may have checked: each is a local
statement and a ranking at every site, and the differences grow with the square of the sums."""

CAP = float(2**34)
"""A site's total of absolute contributions in a cell must stay below this (about 1.7e10):
with p <= 100 and up to 40 sites, 100 * S * CAP in fixed point stays below the 2^62 that the
comparisons handle. A cell at or above it is withheld (the site inputs its ``over`` flag)."""

Floats = npt.NDArray[np.float64]


def _zero_columns(node: exp.Expression) -> exp.Expression:
    return node.copy().transform(lambda n: exp.Literal.number(0) if isinstance(n, exp.Column) else n)


def contribution(branches: Sequence[Branch]) -> exp.Expression | None:
    """What one row contributes to the rule: each branch's column part ``v - v(column = 0)``
    where the branch selects the row (the branches of :func:`~site_agent.privacy.contributions.branches`
    exclude one another), or None when no branch reads a column (counts and proportions: no
    magnitude to dominate)."""
    parts = [
        (b.when, exp.Sub(this=exp.Paren(this=b.value.copy()), expression=exp.Paren(this=_zero_columns(b.value))))
        for b in branches
        if b.value_column
    ]
    if not parts:
        return None
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    return exp.Case(ifs=[exp.If(this=when.copy() if when is not None else exp.true(), true=v) for when, v in parts])


@dataclass
class Differences:
    """The query sets of one query's summed outputs, for the rule on their differences.

    Two released sums over sets A and B of the same column give the sum over the rows in exactly
    one of them by subtraction, whatever the scales (``SUM(x) - SUM(CASE WHEN NOT S THEN x END)``
    is the sum over S; with ``CASE WHEN S THEN x ELSE 2 * x END`` beside ``SUM(x)`` too). As the
    release rule checks the size of every such symmetric difference, the dominance rule checks
    its contributions: for every pair of branches that read the same column, the column's value
    on the rows in exactly one of them. Combinations of three or more sets are not checked (as
    for the size rule: docs/privacy.md).
    """

    seen: list[tuple[str, exp.Expression, exp.Expression]] = field(default_factory=list)
    """(key, presence condition, column) of each branch so far; the key is the SQL of both."""

    def contributions(self, branches: Sequence[Branch]) -> list[exp.Expression]:
        """The contributions to check for an output over ``branches``: its own (:func:`contribution`)
        and one per pair of one of its branches with an earlier branch (of this output or an
        earlier one) of the same column over a different set."""
        own = contribution(branches)
        if own is None:
            return []
        out = [own]
        for b in branches:
            column = b.value.find(exp.Column)
            if not b.value_column or column is None:
                continue
            inside = exp.Not(this=exp.Is(this=exp.Paren(this=b.value.copy()), expression=exp.Null()))
            present: exp.Expression = (
                inside if b.when is None else exp.And(this=exp.Paren(this=b.when.copy()), expression=inside)
            )
            key = f"{present.sql('duckdb')}|{column.sql('duckdb')}"
            for earlier, condition, col in self.seen:
                if col == column and earlier != key:
                    xor = exp.NEQ(this=exp.Paren(this=condition.copy()), expression=exp.Paren(this=present.copy()))
                    out.append(exp.Case(ifs=[exp.If(this=xor, true=column.copy())]))
            if all(key != earlier for earlier, _, _ in self.seen):
                self.seen.append((key, present, column.copy()))
        return out


def combine(rules: Sequence[tuple[int, int] | None]) -> tuple[int, int] | None:
    """The strictest of several sites' (n, p) rules: the largest n and the smallest p (module doc)."""
    on = [r for r in rules if r is not None]
    if not on:
        return None
    return max(n for n, _ in on), min(p for _, p in on)


def check_rule(n: int, p: int) -> str | None:
    """Why (n, p) is not a valid rule, or None."""
    if not 1 <= n <= MAX_N:
        return f"n must be from 1 to {MAX_N}, not {n}"
    if not 0 < p < 100:
        return f"p is a percentage from 1 to 99, not {p}"
    return None


def site_top(
    out: npt.NDArray[np.int64], person: npt.NDArray[np.int64], values: Floats, out_cells: int, n: int
) -> tuple[Floats, Floats, Floats]:
    """One site's inputs, from its local query's rows (one per base cell and person).

    ``out`` (rows, grouping sets) is each row's output cell in every grouping set, ``person`` a
    code per person, ``values`` the person's summed contribution in the base cell (0 for NULL).
    Returns, per output cell, the n largest absolute per-person contributions in descending
    order (zeros pad), the total of absolute contributions, and 1 where the cell is out of range
    (a total at or above :data:`CAP` or not finite): its other inputs are then 0.
    """
    sets = out.shape[1]
    cell = out.reshape(-1)
    who = np.repeat(person, sets)
    v = np.repeat(values, sets)
    width = int(who.max(initial=0)) + 1
    at, keys = pd.factorize(cell * width + who)  # (output cell, person) pairs, by hashing
    magnitude = np.abs(np.bincount(at, weights=v, minlength=keys.size))
    owner = np.asarray(keys, dtype=np.int64) // width
    bad = ~np.isfinite(magnitude)
    over = np.zeros(out_cells, dtype=bool)
    over[owner[bad]] = True
    magnitude[bad] = 0.0
    total: Floats = np.bincount(owner, weights=magnitude, minlength=out_cells).astype(np.float64)
    over |= total >= CAP
    order = np.argsort(-magnitude)  # largest first; then each one's rank within its cell
    owner, magnitude = owner[order], magnitude[order]
    rank = pd.Series(owner).groupby(owner).cumcount().to_numpy()
    keep = rank < n
    top = np.zeros((out_cells, n), dtype=np.float64)
    top[owner[keep], rank[keep]] = magnitude[keep]
    top[over], total[over] = 0.0, 0.0
    return top, total, over.astype(np.float64)


@lru_cache(maxsize=32)
def splits(n: int, sites: int) -> npt.NDArray[np.intp]:
    """Every way to take n persons from ``sites`` sorted lists: (splits, sites), rows summing to n
    (stars and bars)."""
    rows = [np.diff([-1, *bars, n + sites - 1]) - 1 for bars in combinations(range(n + sites - 1), sites - 1)]
    return np.array(rows, dtype=np.intp).reshape(-1, sites)


def _const(p: Party, value: int, shape: tuple[int, ...]) -> AShare:
    return ar.constant(p, np.full(shape, value, dtype=np.int64).view(np.uint64), AShare)


def dominated(
    p: Party, tops: Sequence[AShare], totals: Sequence[AShare], over: Sequence[AShare], n: int, pct: int, frac_bits: int
) -> Protocol[list[AShare]]:
    """Per item, an (out cells,) share that is 0 where the cell is not sensitive and positive
    where it is (the number of splits that pass, plus the sites' out-of-range flags).

    Each item's ``tops`` is (sites, out cells, n) as :func:`site_top` gives it per site (fixed
    point, ``frac_bits``), ``totals`` and ``over`` (sites, out cells). One comparison batch.
    """
    sites = tops[0].shape[0]
    if 100 * sites * CAP * 2**frac_bits >= 2**62:
        raise ValueError("too many sites for the dominance rule's value range")
    idx = splits(n, sites) + (n + 1) * np.arange(sites)  # into the flattened (site, prefix) axis
    cands, limits, sizes = [], [], []
    for top, total in zip(tops, totals, strict=True):
        cells = top.shape[1]
        prefix = AShare.concat([_const(p, 0, (sites, cells, 1)), top.cumsum(axis=2)], axis=2)  # P_s(0..n)
        flat = AShare(np.moveaxis(prefix.v, 2, 1).reshape(2, cells, sites * (n + 1)))  # (2, cells, S (n+1))
        cand = AShare(flat.v[:, :, idx].sum(axis=-1, dtype=np.uint64))  # (2, cells, splits)
        cands.append(cand.mul_public(np.int64(100)).reshape(-1))
        pooled = total.sum(axis=0).mul_public(np.int64(pct))
        limits.append(AShare(np.repeat(pooled.v[:, :, None], idx.shape[0], axis=2)).reshape(-1))
        sizes.append(cells)
    passes = yield from bo.lt(p, AShare.concat(limits), AShare.concat(cands))  # p * total < 100 * top_n
    out, at = [], 0
    for cells, flags in zip(sizes, over, strict=True):
        size = cells * idx.shape[0]
        out.append(passes[at : at + size].reshape(cells, idx.shape[0]).sum(axis=1) + flags.sum(axis=0))
        at += size
    return out
