"""DP mode: plans whose every released number carries Skellam noise added on shares.

A DP plan differs from an exact one (:mod:`.plan`) in three places:

* **Local SQL with bounded contributions** (:mod:`site_agent.privacy.bounding`): at most
  ``max_rows_per_person`` rows per person, summed arguments clipped to their public range.
* **Noise inputs and a noise step.** Every pooled pre-aggregate a released value is made of
  (a count, a sum, a sum of squares, a histogram on a grid) is a *noised quantity*. Each
  committee member inputs, secret-shared, its own Skellam sample per base cell (and bin) of every
  quantity (an input with the encoding ``"noise"``, sampled by
  :func:`site_agent.query.execute.local_preaggregates`); the ``noise`` step adds the three
  samples to the pooled quantity on shares (margins are sums of noised base cells, so they cost
  no budget), and the ``reveal_noisy`` step opens the noised quantities. The un-noised pooled
  value is never opened (:mod:`site_agent.privacy.skellam` says what a corrupted member can do).
* **No suppression.** Every cell of the public grid is released, noised; the release rule's
  size checks, the ledger of released sets and secondary suppression are not needed. Means,
  proportions, variances, rates and quantiles are computed by the analyst from the opened noisy
  quantities (post-processing costs no privacy), with 95% intervals that include the noise
  (:func:`derive`).

The plan's ``params["dp"]`` holds epsilon, delta, the rows bound, the mechanism and the query's
RDP curve, and each quantity its sensitivity and noise variance: all in the plan digest that
every member checks before any share moves. The accountant charges the curve.

Supported: ``COUNT(*)``, ``COUNT(x)``, ``SUM``, ``AVG``, ``PROPORTION``, variances and standard
deviations, ``RATE``, ``MEDIAN`` and quantiles on a column's grid, grouped over public domains,
``ROLLUP``/``CUBE`` and ``SITE``. Refused with a reason: :data:`NOT_DP`, and any sum of a value
without public bounds.
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
from .plan import (
    COUNT_BITS,
    FRAC_BITS,
    Z95,
    Plan,
    _histogram_sql,
    _local_sql,
    cell_expression,
    check_kind,
    key_domains,
    plan_keys,
)

NOT_DP = {
    "count_distinct": "COUNT(DISTINCT ...) has no DP form yet",
    "min": "MIN discloses one person's value and has no DP form",
    "max": "MAX discloses one person's value and has no DP form",
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
        self.histograms: list[dict[str, Any]] = []  # noised histograms on a column's grid
        self.quantities: list[dict[str, Any]] = []
        self.sens: list[Sensitivity] = []
        self.outputs: list[dict[str, Any]] = []

    def _column_range(self, col: exp.Column) -> bounding.Range | None:
        column = self.schema.tables[self.aliases[col.table.lower()]].columns[col.name.lower()]
        return (0.0, 1.0) if column.dtype == "boolean" else column.clip

    def quantity(
        self, expr: exp.Expression, sens: Sensitivity, what: str, bits: int = 0, grid: list[float] | None = None
    ) -> str:
        """A noised pooled pre-aggregate, one per distinct local expression, shared as an integer
        number of units of 2^-``bits``; with ``grid``, a histogram of ``expr`` on the grid (one
        count per cell and bin, its own local query)."""
        key = _sql(expr) if grid is None else f"histogram of {_sql(expr)} on {grid}"
        for q in self.quantities:
            if q["sql"] == key:
                return str(q["name"])
        name = f"q{len(self.quantities)}"
        if grid is None:
            self.items.append((name, expr))
        else:
            self.histograms.append({"name": name, "expr": expr, "grid": grid})
        self.quantities.append(
            {"name": name, "sql": key, "unit_bits": bits, "l1": sens.l1, "l2": sens.l2, "what": what}
        )
        self.sens.append(sens)
        return name

    def count(self, arg: exp.Expression | None) -> str:
        expr = exp.Count(this=exp.Star() if arg is None else arg.copy())
        what = "row count" if arg is None else f"count of {_sql(arg)}"
        return self.quantity(expr, bounding.count_sensitivity(self.rows), what)

    def bounds(self, arg: exp.Expression, name: str) -> bounding.Range:
        """The public range of an argument, or the refusal saying which bounds to declare."""
        bounds = bounding.value_range(arg, self._column_range)
        if bounds is None:
            raise UnsupportedQuery(
                f"{name}: DP mode needs public bounds for {_sql(arg)}; declare bounds = [lo, hi] for its column "
                "in schema.toml"
            )
        return bounds

    def total(self, arg: exp.Expression, name: str, integer: bool = False, square: bool = False) -> str:
        """The noised sum of ``arg`` clipped to its bounds (of its square with ``square``)."""
        bounds = self.bounds(arg, name)
        if integer:  # a predicate's 0/1 indicator: summed as an integer, no clipping needed
            sens = bounding.count_sensitivity(self.rows)
            return self.quantity(exp.Sum(this=arg.copy()), sens, f"sum of {_sql(arg)}")
        value: exp.Expr = bounding.clipped(arg, bounds)
        what = f"{_sql(arg)} clipped to [{bounds[0]:g}, {bounds[1]:g}]"
        if square:
            value, bounds = exp.Mul(this=value, expression=value.copy()), bounding.square_range(bounds)
            what = f"({what})^2"
        bits = bounding.sum_unit_bits(self.rows, bounds, FRAC_BITS)
        sens = bounding.sum_sensitivity(self.rows, bounds, bits)
        return self.quantity(exp.Sum(this=value), sens, f"sum of {what} (in units of 2^{-bits})", bits)

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
            out["sum"] = self.total(arg, agg.name)
        elif agg.kind in ("var", "std"):  # (SS - S^2 / N) / (N - ddof) by the analyst
            assert arg is not None
            lo, hi = self.bounds(arg, agg.name)
            out["count"], out["sum"] = self.count(arg), self.total(arg, agg.name)
            out["squares"] = self.total(arg, agg.name, square=True)
            out["ddof"], out["range"] = agg.ddof, [0.0, (hi - lo) ** 2 / 4]  # Popoviciu: population variance
        elif agg.kind == "quantile":  # the type-7 quantile of the noisy histogram, by the analyst
            assert arg is not None and agg.grid is not None and agg.q is not None
            grid = list(agg.grid)
            what = f"histogram of {_sql(arg)} on the grid {grid[0]:g}..{grid[1]:g} step {grid[2]:g}"
            out["histogram"] = self.quantity(arg, bounding.count_sensitivity(self.rows), what, grid=grid)
            out["q"], out["grid"] = agg.q, grid
        elif agg.kind == "rate":  # events / person-time by the analyst
            events, time = agg.args
            out["sum"], out["time"], out["per"] = self.total(events, agg.name), self.total(time, agg.name), agg.per
            if self.bounds(events, agg.name)[0] >= 0:
                out["range"] = [0.0, None]  # no upper end (JSON has no infinity)
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
        variances, curve = skellam.for_plan(skellam.calibrate(b.sens, dp.epsilon, dp.delta), b.sens)
    except ValueError as exc:
        raise UnsupportedQuery(f"DP mode: {exc}") from None
    cell, domains = cell_expression(query), key_domains(query)
    bounded = replace(query, source=b.source)
    inputs: list[dict[str, Any]] = []
    local = [
        {"name": "cells", "sql": _local_sql(bounded, b.items, cell), "columns": ["cell"] + [n for n, _ in b.items]}
    ]
    for h in b.histograms:
        lo, hi, step = h["grid"]
        local.append(
            {
                "name": h["name"],
                "sql": _histogram_sql(bounded, h["expr"], h["grid"], cell),
                "columns": ["cell", "bin", "n"],
                "bins": round((hi - lo) / step) + 1,
                "grid": h["grid"],
            }
        )
    hist = {h["name"] for h in b.histograms}
    for q, v in zip(b.quantities, variances, strict=True):
        member = skellam.member_variance(v)
        if member / 2 > skellam.MAX_MEMBER_POISSON:
            raise UnsupportedQuery(f"DP mode: the noise for the {q['what']} is too large to draw; raise epsilon")
        q["variance"] = v
        q["sd"] = skellam.released_sd(v) * 2.0 ** -q["unit_bits"]
        own = q["name"] in hist  # a histogram has its own local query (cells x bins)
        if own:
            q["bins"] = next(entry["bins"] for entry in local if entry["name"] == q["name"])
        inputs.append(
            {
                "name": q["name"],
                "query": q["name"] if own else "cells",
                "column": "n" if own else q["name"],
                "encoding": "int",
                "fill": 0,
                **({} if own else {"scale": 2.0 ** q["unit_bits"]}),
            }
        )
        inputs.append(
            {
                "name": f"noise_{q['name']}",
                "query": q["name"] if own else "noise",
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
                "rdp": curve,
            },
        },
        "keys": plan_keys(query, domains),
        "grouping_sets": [list(s) for s in query.grouping_sets],
        "supports": [],
        "local": local,
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
    and each output's noise scale: the sd of the noise in a count or sum; for a ratio, the sds of
    the noise in the quantities it is made of (``{"sum": ..., "count": ...}`` and so on).

    Counts and sums: the value and value +- z sd(noise). The ratios' limits use the delta method
    on the noise (the gradient of the ratio times each quantity's noise sd), plus the sampling
    variance where it is known: a proportion's p (1 - p) / N and a rate's Poisson E / T^2.
    Means: S / N; proportions: S / N; variances: (SS - S^2 / N) / (N - ddof), standard deviations
    their square roots; rates: E / T times ``per``. Undefined where the noisy denominator is not
    positive (NaN); held to their public range (a mean to its argument's bounds, a proportion to
    [0, 1], a variance to [0, (hi - lo)^2 / 4 N / (N - ddof)], a rate of non-negative events to
    [0, inf))."""
    z = float(plan.data["params"]["z"])
    sd = {q["name"]: float(q["sd"]) for q in plan.data["quantities"]}
    columns: dict[str, np.ndarray] = {}
    scale: dict[str, NoiseScale] = {}
    for out in plan.data["outputs"]:
        name, kind = out["name"], out["kind"]
        parts = {role: out[role] for role in ("sum", "count", "squares", "time") if role in out}
        if "histogram" in out:
            value, low, high = _quantile(out, opened[out["histogram"]].astype(np.float64), sd[out["histogram"]], z)
            columns[name], columns[f"{name}_ci_low"], columns[f"{name}_ci_high"] = value, low, high
            scale[name] = sd[out["histogram"]]
            continue
        if len(parts) == 1:  # a count or a sum: the opened quantity itself
            (q,) = parts.values()
            value, spread = opened[q], np.full(opened[q].shape, sd[q])
            scale[name] = sd[q]
        else:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                value, spread, top = _ratio(out, {r: opened[q].astype(np.float64) for r, q in parts.items()},
                                            {r: sd[q] for r, q in parts.items()})  # fmt: skip
            scale[name] = {r: sd[q] for r, q in parts.items()}
        low, high = value - z * spread, value + z * spread
        if "range" in out:  # held to the public range
            lo, hi = out["range"]
            hi = top if kind in ("var", "std") else np.inf if hi is None else hi
            value, low, high = np.clip(value, lo, hi), np.clip(low, lo, hi), np.clip(high, lo, hi)
        if kind == "std":
            value, low, high = np.sqrt(value), np.sqrt(low), np.sqrt(high)
        columns[name], columns[f"{name}_ci_low"], columns[f"{name}_ci_high"] = value, low, high
    return columns, scale


def _quantile(out: dict[str, Any], hist: np.ndarray, sd: float, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The type-7 quantile of a noisy histogram on the grid, per cell as exact mode reads its
    histogram (the first grid point whose cumulative count exceeds the rank; the noisy counts are
    used as they are, so the cumulative counts stay unbiased), and the grid values at the ranks
    h -+ z sqrt(N q (1 - q) + k sd^2): the order statistic's binomial spread plus the noise of the
    k bins summed up to it."""
    lo, _, step = out["grid"]
    q = float(out["q"])
    total = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    last = hist.shape[1] - 1

    def first_above(rank: np.ndarray) -> np.ndarray:  # the bin of the order statistic of this rank
        above = cum > rank[:, None]
        bins: np.ndarray = np.where(above.any(axis=1), np.argmax(above, axis=1), last)
        return bins

    h = np.maximum(total - 1, 0) * q
    below = np.floor(h)
    a, b = first_above(below), first_above(below + 1)
    value = lo + step * (a + (h - below) * (b - a))
    spread = z * np.sqrt(total * q * (1 - q) + (a + 1) * sd * sd)
    low = lo + step * first_above(np.maximum(h - spread, 0))
    high = lo + step * first_above(np.minimum(h + spread, np.maximum(total - 1, 0)))
    empty = total <= 0
    return (np.where(empty, np.nan, value), np.where(empty, np.nan, low), np.where(empty, np.nan, high))


def _ratio(
    out: dict[str, Any], q: dict[str, np.ndarray], sd: dict[str, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ratio output's value, the sd of its noise (and sampling, where known) by the delta
    method, and the top of its range (variances: the population bound times N / (N - ddof))."""
    kind, top = out["kind"], np.full(q["sum"].shape, np.inf)
    if kind == "rate":
        e, t, per = q["sum"], q["time"], float(out["per"])
        r = np.where(t > 0, e / t, np.nan)
        var = np.maximum(e, 0) / t**2 + (sd["sum"] ** 2 + r**2 * sd["time"] ** 2) / t**2
        return r * per, np.sqrt(var) * per, top
    s, n = q["sum"], q["count"]
    if kind in ("var", "std"):
        ss, d = q["squares"], n - int(out["ddof"])
        v = np.where((n > 0) & (d > 0), (ss - s * s / n) / d, np.nan)
        grad_ss, grad_s, grad_n = 1 / d, -2 * s / (n * d), (s * s / n**2) / d - v / d
        var = (grad_ss * sd["squares"]) ** 2 + (grad_s * sd["sum"]) ** 2 + (grad_n * sd["count"]) ** 2
        return v, np.sqrt(var), out["range"][1] * n / d
    m = np.where(n > 0, s / n, np.nan)
    var = (sd["sum"] ** 2 + m**2 * sd["count"] ** 2) / n**2
    if kind == "proportion":
        var = var + np.clip(m, 0, 1) * (1 - np.clip(m, 0, 1)) / n
    return m, np.sqrt(var), top


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
