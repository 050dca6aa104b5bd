"""DP mode: plans whose every released number carries Skellam noise added on shares.

A DP plan differs from an exact one (:mod:`.plan`) in three places:

* **Local SQL with bounded contributions** (:mod:`site_agent.privacy.bounding`): at most
  ``max_rows_per_person`` rows per person, summed arguments clipped to their public range.
* **Noise inputs and a noise step.** Every pooled pre-aggregate a released value is made of
  (a count, a sum) is a *noised quantity*. Each committee member inputs, secret-shared, its own
  Skellam sample per base cell of every quantity (an input with ``"query": "noise"``, sampled by
  :func:`site_agent.query.execute.local_preaggregates`); the ``noise`` step adds the three
  samples to the pooled quantity on shares (margins are sums of noised base cells, so they cost
  no budget), and the ``reveal_noisy`` step opens the noised quantities. The un-noised pooled
  value is never opened (:mod:`site_agent.privacy.skellam` says what a corrupted member can do).
* **No suppression.** Every cell of the public grid is released, noised; the release rule's
  size checks, the ledger of released sets and secondary suppression are not needed. Means and
  proportions are computed by the analyst from the opened noisy sums and counts (post-processing
  costs no privacy), with 95% intervals that include the noise.

The plan's ``params["dp"]`` holds epsilon, delta, the rows bound, the mechanism and the query's
RDP curve, and each quantity its sensitivity and noise variance: all in the plan digest that
every member checks before any share moves. The accountant charges the curve.

Supported: ``COUNT(*)``, ``COUNT(x)``, ``SUM(x)``, ``AVG(x)``, ``PROPORTION(p)`` (and ``AVG(p)``),
grouped over public domains, ``ROLLUP``/``CUBE`` and ``SITE``. Anything else is refused with a
reason (:data:`NOT_DP`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import sqlglot.expressions as exp

from ..errors import UnsupportedQuery
from ..privacy import bounding, skellam
from ..privacy.skellam import Sensitivity
from .catalog import DisclosureRules, Schema
from .cells import Cells
from .failsafe import check_input, check_reveal, check_step
from .parse import DIALECT, Query
from .plan import COUNT_BITS, FRAC_BITS, Z95, Plan, _local_sql, cell_index, check_kind, plan_keys

NOT_DP = {
    "count_distinct": "COUNT(DISTINCT ...) has no DP form yet",
    "var": "variances have no DP form yet",
    "std": "standard deviations have no DP form yet",
    "quantile": "medians and quantiles have no DP form yet",
    "min": "MIN discloses one person's value and has no DP form",
    "max": "MAX discloses one person's value and has no DP form",
    "rate": "RATE has no DP form yet (use SUM of events and SUM of person-time)",
}
MECHANISM = "skellam"
DP_PARAM = "@dp"
"""The signed envelope's parameter that asks for DP mode: ``{"epsilon": E or None}`` (None: the
policy's ``epsilon_per_query``). Not an identifier, so no notebook variable binding can clash."""


@dataclass(frozen=True)
class DpRequest:
    """What a DP query asks for and the combined policy allows: its epsilon, the policy's delta
    and the most rows one person may contribute."""

    epsilon: float
    delta: float = 1e-5
    max_rows_per_person: int = 1

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise UnsupportedQuery(f"epsilon must be a positive number, not {self.epsilon}")


def _sql(e: exp.Expression) -> str:
    return e.sql(DIALECT)


class _DpBuilder:
    """The noised quantities of one DP plan and the outputs made of them."""

    def __init__(self, query: Query, schema: Schema, dp: DpRequest) -> None:
        self.query, self.schema = query, schema
        self.aliases = {t.alias_or_name.lower(): t.name.lower() for t in query.source.find_all(exp.Table)}
        persons = {a: schema.tables[t].person for a, t in self.aliases.items()}
        self.rows = bounding.rows_bound(persons, dp.max_rows_per_person)
        self.source = bounding.bounded_source(query.source, persons, dp.max_rows_per_person)
        self.items: list[tuple[str, exp.Expression]] = []
        self.quantities: list[dict[str, Any]] = []
        self.sens: list[Sensitivity] = []
        self.outputs: list[dict[str, Any]] = []

    def _column_range(self, col: exp.Column) -> bounding.Range | None:
        column = self.schema.tables[self.aliases[col.table.lower()]].columns[col.name.lower()]
        return (0.0, 1.0) if column.dtype == "boolean" else column.clip

    def quantity(self, expr: exp.Expression, sens: Sensitivity, what: str, bits: int = 0) -> str:
        """A noised pooled pre-aggregate, one per distinct local expression, shared as an integer
        number of units of 2^-``bits``."""
        key = _sql(expr)
        for q in self.quantities:
            if q["sql"] == key:
                return str(q["name"])
        name = f"q{len(self.quantities)}"
        self.items.append((name, expr))
        self.quantities.append(
            {"name": name, "sql": key, "unit_bits": bits, "l1": sens.l1, "l2": sens.l2, "what": what}
        )
        self.sens.append(sens)
        return name

    def count(self, arg: exp.Expression | None) -> str:
        expr = exp.Count(this=exp.Star() if arg is None else arg.copy())
        what = "row count" if arg is None else f"count of {_sql(arg)}"
        return self.quantity(expr, bounding.count_sensitivity(self.rows), what)

    def total(self, arg: exp.Expression, name: str, integer: bool) -> str:
        bounds = bounding.value_range(arg, self._column_range)
        if bounds is None:
            raise UnsupportedQuery(
                f"{name}: DP mode needs public bounds for {_sql(arg)}; declare bounds = [lo, hi] for its column "
                "in schema.toml"
            )
        if integer:  # a predicate's 0/1 indicator: summed as an integer, no clipping needed
            sens = bounding.count_sensitivity(self.rows)
            return self.quantity(exp.Sum(this=arg.copy()), sens, f"sum of {_sql(arg)}")
        bits = bounding.sum_unit_bits(self.rows, bounds, FRAC_BITS)
        sens = bounding.sum_sensitivity(self.rows, bounds, bits)
        clipped = bounding.clipped(arg, bounds)
        what = f"sum of {_sql(arg)} clipped to [{bounds[0]:g}, {bounds[1]:g}] (in units of 2^{-bits})"
        return self.quantity(exp.Sum(this=clipped), sens, what, bits)

    def add(self, agg: Any) -> None:
        if agg.kind in NOT_DP:
            raise UnsupportedQuery(f"{agg.name}: {NOT_DP[agg.kind]}; run it without --dp")
        arg = agg.args[0] if agg.args else None
        out: dict[str, Any] = {"name": agg.name, "kind": agg.kind}
        if agg.kind == "count_star":
            out["count"] = self.count(None)
        elif agg.kind == "count":
            out["count"] = self.count(arg)
        elif agg.kind == "sum":
            assert arg is not None
            out["sum"] = self.total(arg, agg.name, False)
        else:  # avg, proportion: the analyst divides the noisy sum by the noisy count
            assert arg is not None
            out["sum"] = self.total(arg, agg.name, agg.kind == "proportion")
            out["count"] = self.count(arg)
            out["range"] = list(bounding.value_range(arg, self._column_range) or (0.0, 1.0))
        self.outputs.append(out)


def build_dp_plan(query: Query, rules: DisclosureRules, schema: Schema, dp: DpRequest) -> Plan:
    """The DP plan of a validated query: bounded local SQL, noise calibrated to ``dp``."""
    check_kind(query, rules)
    b = _DpBuilder(query, schema, dp)
    for agg in query.aggregates:
        b.add(agg)
    try:
        variances = skellam.calibrate(b.sens, dp.epsilon, dp.delta)
    except ValueError as exc:
        raise UnsupportedQuery(f"DP mode: {exc}") from None
    curve = skellam.query_rdp(variances, b.sens)
    cell, domains = cell_index(query)
    bounded = replace(query, source=b.source)
    inputs: list[dict[str, Any]] = []
    for q, v in zip(b.quantities, variances, strict=True):
        member = skellam.member_variance(v)
        if member / 2 > skellam.MAX_MEMBER_POISSON:
            raise UnsupportedQuery(f"DP mode: the noise for the {q['what']} is too large to draw; raise epsilon")
        q["variance"] = v
        q["sd"] = skellam.released_sd(v) * 2.0 ** -q["unit_bits"]
        inputs.append(
            {
                "name": q["name"],
                "query": "cells",
                "column": q["name"],
                "encoding": "int",
                "fill": 0,
                "scale": 2.0 ** q["unit_bits"],
            }
        )
        inputs.append(
            {
                "name": f"noise_{q['name']}",
                "query": "noise",
                "column": "",
                "encoding": "noise",
                "fill": 0,
                "variance": member,
            }
        )
    reveals = [
        {
            "name": f"{q['name']}:noisy",
            "value": q["name"],
            "encoding": "int",
            "support": -1,
            "shape": "all cells",
            "what": f"pooled {q['what']} plus Skellam noise (sd {q['sd']:.4g})",
        }
        for q in b.quantities
    ]
    data = {
        "version": 1,
        "query": query.text,
        "params": {
            "frac_bits": FRAC_BITS,
            "count_bits": COUNT_BITS,
            "z": Z95,
            "dp": {
                "mechanism": MECHANISM,
                "epsilon": dp.epsilon,
                "delta": dp.delta,
                "max_rows_per_person": dp.max_rows_per_person,
                "rows_per_person": b.rows,
                "orders": list(skellam.ORDERS),
                "rdp": [float(x) for x in curve],
            },
        },
        "keys": plan_keys(query, domains),
        "grouping_sets": [list(s) for s in query.grouping_sets],
        "supports": [],
        "local": [
            {"name": "cells", "sql": _local_sql(bounded, b.items, cell), "columns": ["cell"] + [n for n, _ in b.items]}
        ],
        "inputs": [*inputs, check_input()],
        "quantities": b.quantities,
        "steps": [
            check_step(),
            {"op": "pool", "inputs": [q["name"] for q in b.quantities]},
            {"op": "noise", "items": [{"value": q["name"], "noise": f"noise_{q['name']}"} for q in b.quantities]},
            {"op": "reveal_noisy", "items": [r["name"] for r in reveals]},
        ],
        "reveals": [check_reveal(), *reveals],
        "outputs": b.outputs,
        **({"post": query.post.to_json()} if query.post.active else {}),
    }
    return Plan(data)


def is_dp(plan: Plan) -> bool:
    return "dp" in plan.data["params"]


# --- the analyst's side -------------------------------------------------------------------


NoiseScale = float | dict[str, float]


def derive(plan: Plan, opened: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, NoiseScale]]:
    """Each output column and its 95% limits from the opened noisy quantities (post-processing),
    and each output's noise scale: the sd of the noise in a count or sum; for a mean or a
    proportion, the sds of the noise in its numerator and denominator (``{"sum", "count"}``).

    Counts and sums: the value and value +- z sd(noise). Means: S / N (NaN where N <= 0) with the
    delta-method sd of the noise, sqrt(sd_S^2 + mean^2 sd_N^2) / N. Proportions: S / N with
    sd^2 = p (1 - p) / N + (sd_S^2 + p^2 sd_N^2) / N^2 (sampling and noise). Means, proportions
    and their limits are held to the argument's public range ([0, 1] for a proportion)."""
    z = float(plan.data["params"]["z"])
    sd = {q["name"]: float(q["sd"]) for q in plan.data["quantities"]}
    columns: dict[str, np.ndarray] = {}
    scale: dict[str, NoiseScale] = {}
    for out in plan.data["outputs"]:
        name, kind = out["name"], out["kind"]
        if kind in ("count_star", "count", "sum"):
            q = out.get("count") or out["sum"]
            value, spread = opened[q], np.full(opened[q].shape, sd[q])
            scale[name] = sd[q]
        else:
            s, n = opened[out["sum"]].astype(np.float64), opened[out["count"]].astype(np.float64)
            lo, hi = out["range"]
            with np.errstate(divide="ignore", invalid="ignore"):
                value = np.clip(np.where(n > 0, s / n, np.nan), lo, hi)
                if kind == "proportion":
                    var = value * (1 - value) / n + (sd[out["sum"]] ** 2 + value**2 * sd[out["count"]] ** 2) / n**2
                else:
                    var = (sd[out["sum"]] ** 2 + value**2 * sd[out["count"]] ** 2) / n**2
            spread = np.sqrt(var)
            scale[name] = {"sum": sd[out["sum"]], "count": sd[out["count"]]}
        low, high = value - z * spread, value + z * spread
        if "range" in out:  # a mean lies in its argument's public range
            low, high = np.clip(low, *out["range"]), np.clip(high, *out["range"])
        columns[name], columns[f"{name}_ci_low"], columns[f"{name}_ci_high"] = value, low, high
    return columns, scale


def dp_frame(plan: Plan, opened: dict[str, np.ndarray]) -> pd.DataFrame:
    """The analyst's DataFrame of a DP plan: every cell (margins shown as ``(all)``), each output
    with ``_ci_low``/``_ci_high``; ``attrs["dp"]`` holds epsilon, delta and the noise sds."""
    cells = Cells.of(plan.dims, plan.grouping_sets)
    margins = len(plan.grouping_sets) > 1
    columns: dict[str, Any] = {}
    for i, key in enumerate(plan.keys):
        columns[key["name"]] = [
            key["domain"][lab[i]] if lab[i] is not None else ("(all)" if margins else None) for lab in cells.labels()
        ]
    values, scale = derive(plan, opened)
    columns.update(values)
    frame = pd.DataFrame(columns).infer_objects()
    params = plan.data["params"]["dp"]
    frame.attrs["dp"] = {
        "mechanism": params["mechanism"],
        "epsilon": params["epsilon"],
        "delta": params["delta"],
        "rows_per_person": params["rows_per_person"],
        "noise_sd": scale,
    }
    frame.attrs["epsilon"] = params["epsilon"]
    frame.attrs["noise_scale"] = scale
    frame.attrs["suppressed"] = {c: [False] * len(frame) for c in values}
    frame.attrs["empty"] = {c: [False] * len(frame) for c in values}
    frame.attrs["opened"] = {c: len(frame) for c in values}
    return frame
