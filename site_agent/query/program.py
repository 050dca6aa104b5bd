"""The MPC part of a plan: :func:`mpc_program` interprets the plan's declarative steps on shares.

It is a single sans-I/O protocol, so the in-process executor (``run_in_memory``) and the
networked agent run it unchanged. Inputs are this member's shares of every site's
pre-aggregates, stacked on a leading site axis: ``inputs[name]`` has shape (sites, base cells)
or (sites, base cells, bins). Each step handles all of its items in one batch, so the number of
rounds depends on the plan, never on the number of cells or rows.

Values are opened only at the plan's reveal points: the suppression flags to the committee
(``reveal_flags``), then each output's unsuppressed cells, returned as shares for the analyst
(``reveal``) who reconstructs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..models.plan_statements import plan_statement
from ..mpc import arithmetic as ar
from ..mpc.boolean import maximum
from ..mpc.fixed import FixedPoint
from ..mpc.party import Party, Protocol
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..privacy.checks import approval_stops, few_sites, stopped
from ..privacy.dominance import dominated
from ..privacy.release import approval_bounds
from ..privacy.rounding import round_to_base
from ..privacy.skellam import MEMBERS
from . import numeric as nu
from .cells import Cells
from .disclosure import SUPPRESSED, close_pattern, suppress
from .plan import COUNT_BITS, EXTREME_FILL, FRAC_BITS, Plan
from .quantiles import QuantileSpec, released_quantiles

Value = AShare | nu.Float


@dataclass
class MpcResult:
    """What one committee member ends with: the public flags and its shares of the outputs."""

    flags: U64
    opened: dict[str, Value]
    local_failed: bool = False
    withheld: U64 | None = None
    """Held for review of withheld cells (``review_flags``): the release rule's own flags, for the
    DPOs; ``flags`` are then those a DPO's approval leaves, by which ``opened`` was chosen."""
    """Some site's local step failed: nothing was computed or opened after the check. The caller
    raises :class:`~site_agent.errors.LocalStepError` once the session has ended at this member
    (raising inside would send the peers an abort notice that could overtake their own check)."""


def _const(p: Party, values: object, shape: tuple[int, ...]) -> AShare:
    arr = np.broadcast_to(np.asarray(values, dtype=np.int64).view(np.uint64), shape).copy()
    return ar.constant(p, arr, AShare)


def _split(x: Value, sizes: list[int]) -> list[Value]:
    out, at = [], 0
    for n in sizes:
        out.append(x[at : at + n])
        at += n
    return out


class Run:
    """State of one run: the plan, this member's inputs, the values computed so far (model
    statements' steps take it too, site_agent/models/plan_statements.py)."""

    def __init__(self, p: Party, plan: Plan, inputs: Mapping[str, AShare]) -> None:
        self.p = p
        self.plan = plan
        self.inputs = inputs
        self.cells = Cells.of(plan.dims, plan.grouping_sets)
        self.vals: dict[str, Value] = {}
        self.flags: U64 = np.zeros(0, dtype=np.uint64)
        self.withheld: U64 | None = None
        self.opened: dict[str, Value] = {}
        self.local_failed = False
        self.fp = FixedPoint(FRAC_BITS)
        self.public: dict[str, np.ndarray] = {}  # values opened by earlier steps (model statements)

    def share(self, name: str) -> AShare:
        v = self.vals[name]
        if not isinstance(v, AShare):
            raise TypeError(f"{name} is not a fixed-point value")
        return v

    def fixed(self, value: float, shape: tuple[int, ...], bits: int = FRAC_BITS) -> AShare:
        return _const(self.p, round(value * 2**bits), shape)

    # -- steps ---------------------------------------------------------------------------
    def check_local(self, step: dict[str, Any]) -> Protocol[None]:
        """Open the sum of the sites' failure words (a declared reveal point); if it is not 0,
        the program stops here at every member alike (see :mod:`.failsafe`)."""
        words = self.inputs[step["input"]]
        opened = yield from ar.open_all(self.p, AShare(words.v[:, :, :1].sum(axis=1, dtype=np.uint64)))
        self.local_failed = int(opened[0]) != 0

    def pool(self, step: dict[str, Any]) -> Protocol[None]:
        for name in step["inputs"]:
            x = self.inputs[name]
            self.vals[name] = AShare(self.cells.expand(x.v.sum(axis=1, dtype=np.uint64)))
        yield from ()

    def sites(self, step: dict[str, Any]) -> Protocol[None]:
        """The policy's ``min_sites`` flag per output cell from each site's row counts
        (:func:`site_agent.privacy.checks.few_sites`); the release rule stops flagged cells."""
        rows = AShare(self.cells.expand(np.moveaxis(self.inputs[step["input"]].v, 1, 2)))  # (2, out, sites)
        self.vals[step["out"]] = yield from few_sites(self.p, rows, int(step["min_sites"]))

    def dominance(self, step: dict[str, Any]) -> Protocol[None]:
        """The policy's dominance rule: per item a flag per output cell, positive where the cell's
        n largest persons make more than p percent of its total (:mod:`site_agent.privacy.dominance`),
        or where a cell it contains is so (a margin over a dominated cell would give the dominant
        value away less a released remainder); the release rule stops flagged cells. One
        comparison batch for every item."""
        items = step["items"]
        tops, totals, over = ([self.inputs[i[k]] for i in items] for k in ("top", "total", "over"))
        flags = yield from dominated(self.p, tops, totals, over, int(step["n"]), int(step["p"]), FRAC_BITS)
        for item, flag in zip(items, flags, strict=True):
            self.vals[item["out"]] = AShare(self.cells.gather_below(flag.v))

    def suppress(self, step: dict[str, Any]) -> Protocol[None]:
        self.vals["suppressed"] = yield from self._suppressed(step, approved=False)

    def _suppressed(self, step: dict[str, Any], approved: bool) -> Protocol[AShare]:
        """Shares of the flags of the ``suppress`` step's rows: the release rule's (its primary stops
        kept for review), or (``approved``) those a DPO's approval leaves
        (:func:`site_agent.privacy.checks.approval_stops`), with secondary suppression alike."""
        rows, k = step["rows"], int(step["min_cell_size"])
        counts = AShare(np.stack([self.share(r["count"]).v for r in rows], axis=1))
        checks = [[self.share(c) for c in r["checks"]] for r in rows]
        strict = [[] if approved else [self.share(c) for c in r["strict"]] for r in rows]
        flags = [[self.share(f) for f in r["hard_flags" if approved else "flags"]] for r in rows]
        bounds = [approval_bounds(r, k) for r in rows] if approved else None
        ledger = self.inputs.get("ledger")  # differences with remembered sets, per site
        pooled = None if ledger is None else AShare(ledger.v.sum(axis=1, dtype=np.uint64))
        sets = [r["sets"] for r in rows]
        primary, empty = yield from stopped(self.p, checks, strict, flags, k, counts, pooled, sets, bounds)
        if approved:
            primary = yield from approval_stops(self.p, self.share("primary"), primary, self.share(step["cell"]), k)
        else:
            self.vals["primary"] = primary
        return (yield from suppress(self.p, counts, primary, empty, k, self.cells.lines, int(step["passes"])))

    def reveal_flags(self, step: dict[str, Any]) -> Protocol[None]:
        opened = yield from ar.open_all(self.p, self.share("suppressed"))
        # public from here on: combinations of lines are checked on the pattern in the clear
        self.flags = close_pattern(opened.reshape(len(self.plan.data["supports"]), -1), self.cells.lines).ravel()

    def review_flags(self, step: dict[str, Any]) -> Protocol[None]:
        """Output review of withheld cells (a site's ``review = "failing"`` or ``"dpo"``): where the
        release rule withheld a cell (public now), the flags a DPO's approval would leave are
        computed the same way with only the checks approval never overrides, and opened to the
        committee (a declared reveal point); the outputs are then revealed by them, for the DPOs
        to approve, and the release rule's own flags are kept for the DPOs (``withheld``). A
        result without a withheld cell is revealed as the release rule decided."""
        if not np.any(self.flags == SUPPRESSED):
            return
        rule = next(s for s in self.plan.data["steps"] if s["op"] == "suppress")
        kept = yield from self._suppressed(rule, approved=True)
        opened = yield from ar.open_all(self.p, kept)
        self.withheld = self.flags
        self.flags = close_pattern(opened.reshape(len(self.plan.data["supports"]), -1), self.cells.lines).ravel()

    def round(self, step: dict[str, Any]) -> Protocol[None]:
        """Released counts rounded to a multiple of the policy's base, all items in one batch
        (:mod:`site_agent.privacy.rounding`)."""
        items = step["items"]
        x = AShare.concat([self.share(i["in"]) for i in items])
        res = yield from round_to_base(self.p, x, int(self.plan.data["params"]["round_counts"]), COUNT_BITS)
        for item, part in zip(items, _split(res, [self.cells.out] * len(items)), strict=True):
            self.vals[item["out"]] = part

    def mean_fixed(self, step: dict[str, Any]) -> Protocol[None]:
        items = step["items"]
        num = AShare.concat([self.share(i["sum"]) for i in items])
        den = AShare.concat([self.share(i["count"]) for i in items])
        res = yield from nu.divide_fixed(self.p, num, den, FRAC_BITS, 0, FRAC_BITS, COUNT_BITS, 24)
        for item, part in zip(items, _split(res, [self.cells.out] * len(items)), strict=True):
            self.vals[item["out"]] = part

    def pool_m2(self, step: dict[str, Any]) -> Protocol[None]:
        diffs, ns, m2s, shapes = [], [], [], []
        for item in step["items"]:
            n_in, mean_in, m2_in = (self.inputs[item[k]] for k in ("n", "mean", "m2"))
            pooled = self.share(item["pooled_mean"])
            for s, off in zip(self.cells.sets, self.cells.offsets, strict=True):
                members = self.cells.members(s)  # (cells of s, members)
                size = members.shape[0]
                mean_b = AShare(pooled.v[:, None, off : off + size, None])
                diffs.append(AShare((mean_in.v[:, :, members] - mean_b.v).reshape(2, -1)))
                ns.append(AShare(n_in.v[:, :, members].reshape(2, -1)))
                m2s.append(AShare(m2_in.v[:, :, members]))
                shapes.append(m2s[-1].shape)
        d = AShare.concat(diffs)
        d2 = yield from ar.mul_fixed(self.p, d, d, FRAC_BITS)
        nd2 = yield from ar.mul(self.p, AShare.concat(ns), d2)
        parts = _split(nd2, [int(np.prod(sh)) for sh in shapes])
        per_item = len(self.cells.sets)
        for j, item in enumerate(step["items"]):
            out = []
            for k in range(per_item):
                idx = j * per_item + k
                part = parts[idx]
                assert isinstance(part, AShare)
                total = part.reshape(*shapes[idx]) + m2s[idx]
                out.append(total.sum(axis=0).sum(axis=1))
            self.vals[item["out"]] = AShare.concat(out)

    def divide(self, step: dict[str, Any]) -> Protocol[None]:
        items = step["items"]
        nums, dens, offsets = [], [], []
        for i in items:
            den = self.share(i["den"])
            if i.get("den_minus"):
                den = ar.add_public(self.p, den, np.asarray(-int(i["den_minus"]), dtype=np.int64).view(np.uint64))
            nums.append(self.share(i["num"]))
            dens.append(den)
            offsets.append(np.full(self.cells.out, int(i["den_frac"]) - int(i["num_frac"]), dtype=np.int64))
        res = yield from nu.divide_float(self.p, AShare.concat(nums), AShare.concat(dens), np.concatenate(offsets))
        for item, part in zip(items, _split(res, [self.cells.out] * len(items)), strict=True):
            self.vals[item["out"]] = part

    def sqrt(self, step: dict[str, Any]) -> Protocol[None]:
        items = step["items"]
        parts = [self.vals[i["in"]] for i in items]
        assert all(isinstance(x, nu.Float) for x in parts)
        res = yield from nu.sqrt_float(self.p, nu.Float.concat(parts))  # type: ignore[arg-type]
        for item, part in zip(items, _split(res, [self.cells.out] * len(items)), strict=True):
            self.vals[item["out"]] = part

    def quantile(self, step: dict[str, Any]) -> Protocol[None]:
        """Type-7 quantiles coarsened until k persons share them (:mod:`.quantiles`).

        Stores each item's released value under ``out`` and, under ``out + "_bad"``, a 0/1 share
        per cell: 1 when no coarsening level has k persons in both bins the quantile reads, so the
        cell's quantile must be suppressed (a forced primary suppression).
        """
        items = step["items"]
        specs = [QuantileSpec(int(i["q"][0]), int(i["q"][1]), tuple(i["grid"])) for i in items]
        k = int(self.plan.data["params"]["min_cell_size"])
        values, bad = yield from released_quantiles(self.p, [self.share(i["hist"]) for i in items], specs, k, self.fp)
        for item, value, flag in zip(items, values, bad, strict=True):
            self.vals[item["out"]] = value
            self.vals[item["out"] + "_bad"] = flag

    def extreme(self, step: dict[str, Any]) -> Protocol[None]:
        blocks, sizes = [], []
        for item in step["items"]:
            x = self.inputs[item["in"]]
            for s in self.cells.sets:
                members = self.cells.members(s)
                g = x.v[:, :, members]  # (2, sites, cells, members)
                blocks.append(np.moveaxis(g, 1, 2).reshape(2, members.shape[0], -1))
            sizes.append(self.cells.out)
        width = max(b.shape[2] for b in blocks)
        rows = sum(b.shape[1] for b in blocks)
        full = _const(self.p, self.fp.encode(EXTREME_FILL).view(np.int64), (rows, width)).v
        at = 0
        for b in blocks:
            full[:, at : at + b.shape[1], : b.shape[2]] = b
            at += b.shape[1]
        top, _ = yield from maximum(self.p, AShare(full))
        for item, part in zip(step["items"], _split(top, sizes), strict=True):
            assert isinstance(part, AShare)
            self.vals[item["out"]] = -part if item["negate"] else part

    def wilson(self, step: dict[str, Any]) -> Protocol[None]:
        items, z = step["items"], float(self.plan.data["params"]["z"])
        x = AShare.concat([self.share(i["x"]) for i in items])
        n = AShare.concat([self.share(i["n"]) for i in items])
        shape, fw = x.shape, 24  # limits' numerators carry 24 fractional bits
        centre = x.lshift(fw) + self.fixed(z * z / 2, shape, fw)
        xnx = yield from ar.mul(self.p, x, n - x)
        spread = yield from nu.divide_fixed(self.p, xnx, n, 0, 0, FRAC_BITS, COUNT_BITS, 20)
        spread = spread + self.fixed(z * z / 4, shape)
        root = yield from nu.sqrt_fixed(self.p, spread, FRAC_BITS, fw)
        half = yield from ar.trunc(self.p, root.mul_public(np.int64(round(z * 2**fw))), fw)
        den = n.lshift(FRAC_BITS) + self.fixed(z * z, shape)
        res = yield from nu.divide_float(
            self.p,
            AShare.concat([centre - half, centre + half]),
            AShare.concat([den, den]),
            np.full(2 * x.shape[0], FRAC_BITS - fw),
        )
        self._store_limits(items, res)

    def byar(self, step: dict[str, Any]) -> Protocol[None]:
        items, z = step["items"], float(self.plan.data["params"]["z"])
        e = AShare.concat([self.share(i["events"]) for i in items])
        pt = AShare.concat([self.share(i["time"]) for i in items])
        m = e.shape[0]
        u = AShare.concat([e, ar.add_public(self.p, e, np.asarray(1, dtype=np.uint64))])
        shape = u.shape
        a = yield from nu.divide_fixed(self.p, _const(self.p, 1, shape), u.mul_public(np.int64(9)), 0, 0, 30, 28, 24)
        root = yield from nu.sqrt_fixed(self.p, u.lshift(FRAC_BITS), FRAC_BITS, FRAC_BITS)
        b = yield from nu.divide_fixed(self.p, self.fixed(z / 3, shape, 30), root, 30, FRAC_BITS, 30, 29, 24)
        sign = np.concatenate([np.full(m, -1), np.full(m, 1)]).astype(np.int64)
        t = self.fixed(1.0, shape, 30) - a + b.mul_public(sign)
        t2 = yield from ar.mul_fixed(self.p, t, t, 30)
        t3 = yield from ar.mul_fixed(self.p, t2, t, 30)
        num = yield from ar.mul(self.p, u, t3)
        res = yield from nu.divide_float(self.p, num, AShare.concat([pt, pt]), np.full(2 * m, FRAC_BITS - 30))
        self._store_limits(items, res)

    def _store_limits(self, items: list[dict[str, Any]], res: nu.Float) -> None:
        half = res.sign.shape[0] // 2
        for k, item in enumerate(items):
            rows = slice(k * self.cells.out, (k + 1) * self.cells.out)
            self.vals[f"{item['out']}_low"] = res[:half][rows]
            self.vals[f"{item['out']}_high"] = res[half:][rows]

    def noise(self, step: dict[str, Any]) -> Protocol[None]:
        """DP mode: add the members' Skellam samples to each pooled quantity on shares (local, no
        communication; margins get the sum of their cells' noise) (:mod:`.dp`). The committee's
        three members come first on the site axis; input-only sites after them add no noise."""
        for item in step["items"]:
            samples = self.inputs[item["noise"]].v[:, :MEMBERS].sum(axis=1, dtype=np.uint64)
            self.vals[item["value"]] = self.share(item["value"]) + AShare(self.cells.expand(samples))
        yield from ()

    def reveal_noisy(self, step: dict[str, Any]) -> Protocol[None]:
        """DP mode: hand every cell of the noised quantities to the analyst (nothing suppressed)."""
        by_name = {r["name"]: r for r in self.plan.data["reveals"]}
        for name in step["items"]:
            self.opened[name] = self.vals[by_name[name]["value"]]
        yield from ()

    def reveal(self, step: dict[str, Any]) -> Protocol[None]:
        by_name = {r["name"]: r for r in self.plan.data["reveals"]}
        flags = self.flags.reshape(len(self.plan.data["supports"]), -1)
        for name in step["items"]:
            r = by_name[name]
            keep = np.flatnonzero(flags[int(r["support"])] == 0)
            self.opened[name] = self.vals[r["value"]][keep]
        yield from ()


def mpc_program(p: Party, plan: Plan, inputs: Mapping[str, AShare]) -> Protocol[MpcResult]:
    """Run the plan's MPC steps for member ``p`` over its shares of the sites' pre-aggregates."""
    run = Run(p, plan, inputs)
    handlers: dict[str, Callable[[dict[str, Any]], Protocol[None]]] = {
        "check_local": run.check_local,
        "pool": run.pool,
        "sites": run.sites,
        "dominance": run.dominance,
        "suppress": run.suppress,
        "reveal_flags": run.reveal_flags,
        "review_flags": run.review_flags,
        "round": run.round,
        "mean_fixed": run.mean_fixed,
        "pool_m2": run.pool_m2,
        "divide": run.divide,
        "sqrt": run.sqrt,
        "quantile": run.quantile,
        "extreme": run.extreme,
        "wilson": run.wilson,
        "noise": run.noise,
        "reveal_noisy": run.reveal_noisy,
        "byar": run.byar,
        "reveal": run.reveal,
    }
    statement = plan_statement(plan)  # a model statement's own steps (site_agent/models)
    if statement is not None:
        handlers.update({op: partial(fn, run) for op, fn in statement.steps.items()})
    for step in plan.data["steps"]:
        yield from handlers[step["op"]](step)
        if run.local_failed:
            return MpcResult(run.flags, {}, local_failed=True)
    return MpcResult(run.flags, run.opened, withheld=run.withheld)
