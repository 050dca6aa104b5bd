"""Release rules for models: which pooled facts must hold before any number of a model opens.

A fitted model is a statistic over its query set (the complete cases of FROM and WHERE). Its
coefficients can isolate a person as surely as a cell count: a WHERE that keeps one patient
makes the intercept of ``LINEAR y ~ 1`` that patient's value, and a ``C()`` level held by one
patient makes the level's coefficient that patient's difference. So, on shares, before the
first value (even a committee iterate) is opened, every model checks (after ACRO, the
Statistical Disclosure Control rules for model outputs of the SACRO project, and the release
rule of :mod:`site_agent.privacy.release`):

* ``min_cell_size``: the query set holds at least k persons, and every level of every
  categorical term, and every cell of an interaction of categorical terms, holds at least k
  persons among the complete cases (a level with no one is
  refused too: its coefficient is not estimable). k is the release rule's threshold
  (:attr:`~site_agent.query.catalog.DisclosureRules.threshold`).
* ``model_residual_df``: n - p >= :data:`MIN_RESIDUAL_DF` (ACRO: 10), p the number of
  parameters; a saturated model reproduces its data.
* ``model_events_per_term``: for binary and count outcomes, the events (for a binary outcome
  the rarer of events and non-events) >= :data:`MIN_EVENTS_PER_TERM` (ACRO: 10) per parameter
  besides the intercept.

Each rule is one bit opened to the committee (a declared reveal point); a failing rule stops
the model with a refusal naming it, and nothing else is opened. Counts of dropped rows (missing
values) are released under the ordinary rule: 0 or at least k.

All comparisons run in one batch (:func:`model_checks`): 7 rounds for the comparisons, 7 more
to fold each rule's comparisons into its bit, and one to open the bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..mpc import arithmetic as ar
from ..mpc import boolean as bo
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare

MIN_RESIDUAL_DF = 10
MIN_EVENTS_PER_TERM = 10
GRADIENT_ETA_BOUND = 6.0
"""GRADIENT: every row's linear predictor at the analyst's coefficients within +-6 (p in
[0.0025, 0.9975]), so that no coefficients cut the rows into p = 0 and p = 1 sides."""

RULE_MESSAGES = {
    "min_cell_size": "the model's rows, or a level of a categorical term, hold fewer than {k} persons",
    "model_residual_df": "the model leaves fewer than {df} residual degrees of freedom",
    "model_events_per_term": "the model has fewer than {epv} events per term",
    "gradient_eta_bound": f"the linear predictor at AT lies beyond +-{GRADIENT_ETA_BOUND:g} at some row",
    "term_isolation": "a term is 0, or is not 0, at 1 to {k}-1 persons",
}


@dataclass(frozen=True)
class ModelRules:
    """The thresholds a model is checked against (strictest site's k; ACRO's defaults)."""

    k: int
    min_df: int = MIN_RESIDUAL_DF
    events_per_term: int = MIN_EVENTS_PER_TERM

    def message(self, rule: str) -> str:
        return RULE_MESSAGES[rule].format(k=self.k, df=self.min_df, epv=self.events_per_term)


@dataclass(frozen=True)
class Check:
    """One rule on shares: ``values`` (integer ring values) must each be >= ``limit``."""

    rule: str
    values: AShare
    limit: int


def _const(p: Party, value: int, shape: tuple[int, ...]) -> AShare:
    return ar.constant(p, np.full(shape, value, dtype=np.int64).view(np.uint64), AShare)


def model_checks(p: Party, checks: Sequence[Check]) -> Protocol[list[bool]]:
    """For each check, whether it fails (some value below its limit): one public bit per rule.

    Values are integers in the ring (counts, or events times a public factor, below 2^62)."""
    flat = AShare.concat([c.values.ravel() for c in checks])
    limits = AShare.concat([_const(p, c.limit, (c.values.size,)) for c in checks])
    below = yield from bo.lt(p, flat, limits)
    sums, at = [], 0
    for c in checks:
        sums.append(below[at : at + c.values.size].sum(axis=0).reshape(1))
        at += c.values.size
    total = AShare.concat(sums)
    passed = yield from bo.lt(p, total, _const(p, 1, total.shape))
    opened = yield from ar.open_all(p, passed)
    return [int(v) != 1 for v in opened]


def small_counts(p: Party, counts: AShare, k: int) -> Protocol[list[bool]]:
    """For each count, whether it lies in 1..k-1 (then it is withheld under the ordinary rule):
    one bit per count, opened to the committee; the counts themselves stay secret."""
    flat = counts.ravel()
    n = flat.size
    below = yield from bo.lt(p, AShare.concat([flat, flat]), AShare.concat([_const(p, k, (n,)), _const(p, 1, (n,))]))
    small = yield from ar.open_all(p, below[:n] - below[n:])
    return [int(v) == 1 for v in small]


def released_count(p: Party, count: AShare, k: int) -> Protocol[tuple[AShare, bool]]:
    """A count to release under the ordinary rule: (the count, whether it is withheld because it
    lies in 1..k-1). The bit is opened to the committee; a withheld count is never opened."""
    small = yield from small_counts(p, count, k)
    return count, small[0]
