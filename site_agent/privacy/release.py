"""The release rule, planned: which counts decide whether each released number may be opened.

Invariant (docs/privacy.md): every released number is a statistic over query sets that each
hold 0 or at least k persons, and every set that subtracting two released numbers of the same
query yields holds 0 or at least k persons too.

A *query set* is the persons of a cell (WHERE and the cell's keys) selected by one branch of an
aggregate's argument (:mod:`site_agent.privacy.contributions`); ``None`` stands for the whole
cell. For each output the planner asks :meth:`ReleasePlanner.row` for a *release row*: the
output's cells are opened only where every count the row lists is 0 or >= k:

* the persons of each of its query sets, of each set restricted to rows whose value is not
  NULL (a mean over one non-NULL value is that person's value), and of all rows with a value;
  for outputs other than counts this last count must not be 0 either (a mean over nothing is
  undefined, not 0);
* for every pair of query sets of the query (any outputs), the persons in exactly one of the two
  (the symmetric difference): ``SUM(x)`` and ``SUM(CASE WHEN NOT T THEN x END)`` are two large
  sets whose difference is the one patient T. A bad pair stops the later set's outputs; the
  whole-cell set is first, so plain counts survive.

The counts are local SQL pre-aggregates at each site (distinct persons per site, summed inside
MPC), so everything is decided on shares; only the final suppression flags are opened.
:func:`site_agent.privacy.suppression.suppress` then adds secondary suppression over the lines of
ROLLUP/CUBE tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlglot.expressions as exp

from .contributions import Branch

CountInput = Callable[[str, exp.Expression], str]
"""Registers a local pre-aggregate (a name hint and its SQL expression) and returns the input
name; equal expressions give the same input."""


def _present(value: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.Is(this=exp.Paren(this=value.copy()), expression=exp.Null()))


@dataclass
class ReleasePlanner:
    """Collects the query sets of one query and the release rows of its outputs."""

    person: exp.Expression | None
    count_input: CountInput
    sets: list[str | None] = field(default_factory=lambda: [None])  # SQL of ``when``; None: the cell
    _set_exprs: list[exp.Expression | None] = field(default_factory=lambda: [None])
    rows: list[dict[str, Any]] = field(default_factory=list)

    def _persons(self, when: exp.Expression | None) -> exp.Expression:
        """COUNT of distinct persons (of rows, without a person column) where ``when`` holds."""
        if self.person is None:
            if when is None:
                return exp.Count(this=exp.Star())
            return exp.Count(this=exp.Case(ifs=[exp.If(this=when.copy(), true=exp.Literal.number(1))]))
        who = self.person.copy()
        if when is not None:
            who = exp.Case(ifs=[exp.If(this=when.copy(), true=who)])
        return exp.Count(this=exp.Distinct(expressions=[who]))

    def _set(self, when: exp.Expression | None) -> int:
        key = None if when is None else when.sql("duckdb")
        if key not in self.sets:
            self.sets.append(key)
            self._set_exprs.append(when)
        return self.sets.index(key)

    def cell(self) -> str:
        """The input counting the persons of each cell."""
        return self.count_input("persons", self._persons(None))

    def row(
        self,
        branches: tuple[Branch, ...],
        value: exp.Expression | None,
        counts_only: bool,
        extra_flags: tuple[str, ...] = (),
        reviewable_flags: tuple[str, ...] = (),
    ) -> int:
        """The release row of an output over ``branches`` (none: the cell itself) of ``value``
        (its argument; None for ``COUNT(*)``).

        ``counts_only``: the output is a count, and a count of 0 is released (a mean, a variance
        or a quantile over no value is undefined: its cell is withheld like a small one).
        ``extra_flags`` are 0/1 values computed in MPC that stop a cell as well (a quantile
        whose grid bin holds too few persons at every coarsening); ``reviewable_flags`` too, but
        a DPO's approval may release what they stop (the dominance rule: :func:`approval_bounds`).
        """
        checks: list[str] = []
        sets: list[int] = []
        for b in branches or (Branch(None, exp.Literal.number(1), False),):
            sets.append(self._set(b.when))
            checks.append(self.count_input("persons", self._persons(b.when)))
            if b.value_column:
                present = _present(b.value)
                both = present if b.when is None else exp.And(this=exp.Paren(this=b.when.copy()), expression=present)
                checks.append(self.count_input("persons", self._persons(both)))
        main = self.count_input("persons", self._persons(None if value is None else _present(value)))
        checks.append(main)
        entry = {
            "count": main,
            "checks": list(dict.fromkeys(checks)),
            "strict": [] if counts_only else [main],
            "sets": sets,
            "flags": list(extra_flags) + list(reviewable_flags),
            "hard_flags": list(extra_flags),
        }
        for i, existing in enumerate(self.rows):
            if existing == entry:
                return i
        self.rows.append(entry)
        return len(self.rows) - 1

    def members(self, person: exp.Expression) -> list[exp.Expr]:
        """Select items for the ledger's membership query: the person, then one TRUE/FALSE column
        per query set telling whether the row is in it (the cell itself first)."""
        items: list[exp.Expr] = [exp.alias_(person.copy(), "person")]
        for r, when in enumerate(self._set_exprs):
            inside = (
                exp.true()
                if when is None
                else exp.Coalesce(this=exp.Paren(this=when.copy()), expressions=[exp.false()])
            )
            items.append(exp.alias_(inside, f"m{r}"))
        return items

    def step(self, min_cell_size: int, passes: int, flags: tuple[str, ...] = ()) -> dict[str, Any]:
        """The plan's ``suppress`` step: rows with their checks, pair differences added now that
        every output's sets are known (and listed as ``differences``); ``flags`` (0/1 values per
        cell, such as the policy's too-few-sites flag) stop the cells of every row. Each row's
        ``hard_flags`` are those a DPO's approval never overrides (:func:`approval_bounds`)."""
        pairs: dict[int, list[str]] = {}
        for j in range(1, len(self.sets)):
            for i in range(j):
                a, b = self._set_exprs[i], self._set_exprs[j]
                in_a, in_b = (exp.true() if w is None else exp.Paren(this=w.copy()) for w in (a, b))  # two-valued
                xor = exp.NEQ(this=in_a, expression=in_b)
                pairs.setdefault(j, []).append(self.count_input("xor", self._persons(xor)))
        rows = []
        for r in self.rows:
            diffs = [d for s in r["sets"] for d in pairs.get(s, [])]
            checks = list(dict.fromkeys(r["checks"] + diffs))
            rows.append(
                {
                    "count": r["count"],
                    "checks": checks,
                    "strict": r["strict"],
                    "flags": r["flags"] + list(flags),
                    "hard_flags": r["hard_flags"] + list(flags),
                    "differences": list(dict.fromkeys(diffs)),
                    "sets": r["sets"],
                }
            )
        cell = self.cell()  # the persons of each cell: which cells a DPO's approval may release
        return {"op": "suppress", "rows": rows, "cell": cell, "min_cell_size": min_cell_size, "passes": passes}


def approval_bounds(row: dict[str, Any], k: int) -> list[int]:
    """For each check of a ``suppress`` row, the bound below which it still stops a cell *of 1 to
    k-1 persons* once a data-protection officer approved releasing what the release rule withheld
    (docs/review-and-report.md, review = "failing"): k for a pair difference (a tracker), 1 for
    the others (branch sets and non-NULL counts, subsets of the small cell: only a negative
    count, a site's failure penalty, stops them). With the row's ``hard_flags`` (too few sites,
    a quantile without k persons in its bins) and the ledger's differences with remembered sets
    (always at k), these are what approval never overrides. In a cell of k or more persons
    approval overrides nothing (:func:`site_agent.privacy.checks.approval_stops`)."""
    differences = set(row["differences"])
    return [k if c in differences else 1 for c in row["checks"]]
