"""Run a plan in one process: every site's local SQL, sharing, the MPC program, reconstruction.

This is the whole query path with the network taken out, for tests, demos and benchmarks.
The three roles stay separate in the code: :func:`local_preaggregates` is what a site computes
on its own data (in the clear, never leaving the site except as shares); :func:`mpc_program`
is what the committee runs; :func:`assemble` is what the analyst does with the opened outputs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LocalStepError, QueryError
from ..models.plan_statements import plan_statement
from ..mpc import sharing
from ..mpc.fixed import TRUNC_LIMIT_BITS, FixedPoint, decode_int, encode_int
from ..mpc.party import Stats, run_in_memory
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..privacy import dominance, skellam
from . import post
from .cells import Cells
from .disclosure import EMPTY, RELEASED, SUPPRESSED
from .dp import dp_frame, is_dp
from .failsafe import FAILED, failure_word, other_cells, range_penalty
from .membership import base_cells, output_cells
from .numeric import Float, decode_float
from .plan import FRAC_BITS, Plan
from .program import MpcResult, mpc_program

_FP = FixedPoint(FRAC_BITS)
_COUNTS = ("count_star", "count", "count_distinct")  # outputs that are 0 over no rows
NOISE = "noise"
"""The encoding of a DP noise input: integers the member samples itself (:mod:`.dp`)."""
log = logging.getLogger(__name__)


def _column(result: Mapping[str, Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    """A fetched column as (float values, NULL mask)."""
    col = result[name]
    mask = np.ma.getmaskarray(col)
    data = np.ma.getdata(col)
    values = (
        np.asarray(data, dtype=np.float64)
        if data.dtype != object
        else np.array([np.nan if v is None else float(v) for v in data], dtype=np.float64)
    )
    return values, mask | np.isnan(values)


def _site_slot(plan: Plan, site: str, site_index: int | None, holds_data: bool = True) -> int | None:
    """The position of this site in the ``SITE`` domain (None when the plan has no SITE key, or
    for a site without data, which has no SITE slice)."""
    key = plan.site_key
    if key is None or not holds_data:
        return None
    domain = plan.keys[key]["domain"]
    if site_index is None:
        if site not in domain:
            raise QueryError(f"site {site!r} is not one of the plan's sites ({', '.join(domain)})")
        site_index = domain.index(site)
    if not 0 <= site_index < len(domain):
        raise QueryError(f"site index {site_index} is outside the plan's {len(domain)} sites")
    return site_index


def _place(plan: Plan, arr: np.ndarray, slot: int | None, fill: float) -> np.ndarray:
    """Local cells (local cells, *tail) into the base grid (base cells, *tail): the site's own
    SITE slice holds them, every other site's slice the fill value. Without a slot (a site
    without data) every slice holds the fill value."""
    key = plan.site_key
    if key is None:
        return arr
    dims, tail = plan.dims, arr.shape[1:]
    full = np.full((*dims, *tail), fill, dtype=np.float64)
    if slot is None:
        return full.reshape(plan.base_cells, *tail)
    index: tuple[int | slice, ...] = (*(slice(None),) * key, slot)
    full[index] = arr.reshape((*(d for i, d in enumerate(dims) if i != key), *tail))
    return full.reshape(plan.base_cells, *tail)


def local_preaggregates(
    plan: Plan, con: Any, site: str = "site", site_index: int | None = None, holds_data: bool = True
) -> dict[str, U64]:
    """Run the plan's local SQL on one site's connection; the pre-aggregates as ring vectors.

    ``site`` names the site in errors. For a per-site breakdown (a ``SITE`` key) the local SQL
    is the same at every site and the site's position enters here: ``site_index`` (its position
    in the SITE domain), or else ``site``'s position in that domain, selects the slice of the
    base-cell grid that holds this site's pre-aggregates. A site without data
    (``holds_data=False``, its tables empty) has no slice: all its inputs are fill values.

    Never fails on data (see :mod:`.failsafe`): a pre-aggregate out of the fixed-point range is
    input as 0 with the cell's support counts penalised, and any other failure of the local step
    gives :func:`failed_inputs`, so the committee fails the query alike at every member. The
    failure's class (never its text, which can quote values) goes to this site's own log.
    """
    slot = _site_slot(plan, site, site_index, holds_data)
    try:
        values = _local_values(plan, con, slot)
    except Exception as exc:  # whatever the engine or the data did: the committee learns one bit
        log.warning("the local step failed here (%s); the query fails at every member", type(exc).__name__)
        return failed_inputs(plan)
    bad = np.zeros(plan.base_cells, dtype=bool)
    for spec in plan.data["inputs"]:
        if spec.get("cells") == "out" or spec["encoding"] == NOISE:
            continue  # the dominance rule's inputs (kept in range by site_top) and noise: not data
        arr = values[spec["name"]]
        limit = 2.0**TRUNC_LIMIT_BITS if spec["encoding"] == "int" else _FP.max_abs
        out = ~np.isfinite(arr) | (np.abs(arr) >= limit)
        if spec["encoding"] == "int":
            out |= np.isfinite(arr) & (arr != np.rint(arr))
        if out.any():
            bad |= out.reshape(plan.base_cells, -1).any(axis=1)
            arr[out] = 0.0
    range_penalty(bad, {s: values[s] for s in plan.data["supports"]})
    rng = skellam.generator()
    return {
        spec["name"]: encode_int(
            skellam.sample(float(spec["variance"]), int(np.prod(_zero_shape(plan, spec))), rng).reshape(
                _zero_shape(plan, spec)
            )
        )
        if spec["encoding"] == NOISE
        else encode_int(values[spec["name"]])
        if spec["encoding"] == "int"
        else _FP.encode(values[spec["name"]])
        for spec in plan.data["inputs"]
    }


def _local_values(plan: Plan, con: Any, slot: int | None) -> dict[str, np.ndarray]:
    """Every input as float64 over the base cells (and bins), before range checks."""
    base = plan.local_cells
    fetched = {q["name"]: con.execute(q["sql"]).fetchnumpy() for q in plan.data["local"]}
    bins = {q["name"]: int(q["bins"]) for q in plan.data["local"] if "bins" in q}
    tops = {
        q["name"]: _dominance_inputs(plan, fetched[q["name"]], int(q["top"]), slot)
        for q in plan.data["local"]
        if "top" in q
    }
    out: dict[str, np.ndarray] = {}
    for spec in plan.data["inputs"]:
        if spec["name"] == FAILED or spec["encoding"] == NOISE:  # set by the site, not by its data
            out[spec["name"]] = np.zeros(plan.base_cells, dtype=np.float64)
            continue
        if spec["query"] in tops:
            out[spec["name"]] = tops[spec["query"]][spec["column"]]
            continue
        result = fetched[spec["query"]]
        cell, null_cell = _column(result, "cell")
        if null_cell.any():
            raise QueryError("a group key has a value outside its declared domain (or NULL)")
        cells = cell.astype(np.int64)
        values, null = _column(result, spec["column"])
        if "scale" in spec:  # a DP sum, shared in whole units of 2^-bits (site_agent/query/dp.py)
            values = np.rint(values * float(spec["scale"]))
        values = np.where(null, float(spec["fill"]), values)
        arr: np.ndarray
        if spec["query"] in bins:
            arr = np.zeros((base, bins[spec["query"]]), dtype=np.float64)
            arr[cells, _column(result, "bin")[0].astype(np.int64)] = values
        else:
            arr = np.full(base, float(spec["fill"]), dtype=np.float64)
            arr[cells] = values
        out[spec["name"]] = _place(plan, arr, slot, float(spec["fill"]))
    return out


def _dominance_inputs(plan: Plan, result: Mapping[str, Any], n: int, slot: int | None) -> dict[str, np.ndarray]:
    """The dominance rule's inputs from its local query (:func:`site_agent.privacy.dominance.site_top`):
    each row's output cells, its person as a code (each row its own where the query names none),
    its contribution (NULL adds nothing)."""
    cells = Cells.of(plan.dims, plan.grouping_sets)
    if plan.site_key is not None and slot is None:  # a site without data: no SITE slice
        zero = np.zeros(cells.out, dtype=np.float64)
        return {"top": np.zeros((cells.out, n), dtype=np.float64), "total": zero, "over": zero}
    cell, null_cell = _column(result, "cell")
    if null_cell.any():
        raise QueryError("a group key has a value outside its declared domain (or NULL)")
    out = output_cells(cells)[base_cells(plan, cell.astype(np.int64), slot)]
    if "person" in result:
        person = pd.Series(np.ma.getdata(result["person"])).where(~np.ma.getmaskarray(result["person"]))
        codes = pd.factorize(person)[0] + 1  # NULL persons (-1) together as one
    else:  # each row is one person (in one cell, without margins; or the table names none)
        codes = np.arange(cell.size, dtype=np.int64)
    values, null = _column(result, "v")
    top, total, over = dominance.site_top(out, codes, np.where(null, 0.0, values), cells.out, n)
    return {"top": top, "total": total, "over": over}


def failed_inputs(plan: Plan) -> dict[str, U64]:
    """What a site whose local step failed inputs: fill values, and its secret failure word."""
    out: dict[str, U64] = {}
    for spec in plan.data["inputs"]:
        shape = _zero_shape(plan, spec)
        if spec["name"] == FAILED:
            word = np.zeros(shape, dtype=np.uint64)
            word[0] = failure_word()
            out[FAILED] = word
        elif spec["encoding"] in ("int", NOISE):
            out[spec["name"]] = encode_int(np.full(shape, int(spec["fill"]), dtype=np.int64))
        else:
            out[spec["name"]] = _FP.encode(np.full(shape, float(spec["fill"])))
    return out


def share_inputs(per_site: list[dict[str, U64]]) -> list[dict[str, AShare]]:
    """Deal every site's vectors and stack them on a site axis, for each committee member."""
    members: list[dict[str, AShare]] = [{}, {}, {}]
    for name in per_site[0]:
        dealt = [sharing.deal(site[name]) for site in per_site]
        for i in range(3):
            members[i][name] = AShare(np.stack([d[i].v for d in dealt], axis=1))
    return members


def _open(results: list[MpcResult], name: str, encoding: str) -> np.ndarray:
    parts = [r.opened[name] for r in results]
    if isinstance(parts[0], Float):
        fl = [p for p in parts if isinstance(p, Float)]
        return decode_float(*(sharing.reconstruct([getattr(f, a) for f in fl]) for a in ("sign", "mant", "exp")))
    shares = [p for p in parts if isinstance(p, AShare)]
    raw = sharing.reconstruct(shares)
    return decode_int(raw).astype(np.int64) if encoding == "int" else _FP.decode(raw)


def assemble(plan: Plan, results: list[MpcResult]) -> pd.DataFrame:
    """The analyst's side: reconstruct the declared outputs into a DataFrame (``<k`` marks; an
    ``(other)`` row only where it releases a value), then HAVING, ORDER BY, LIMIT and OFFSET over
    the released values (:mod:`.post`).

    An empty cell (its count is 0, flag ``EMPTY``) is released without being opened: its
    counts are 0 and every other statistic NULL, as SQL gives over no rows.

    ``attrs["suppressed"]`` holds each output column's suppression flags for the rows shown;
    ``attrs["opened"]`` the number of cells opened per column (rows HAVING or LIMIT leave out
    were opened all the same)."""
    statement = plan_statement(plan)
    if statement is not None:  # a model statement assembles its own result (site_agent/models)
        return statement.assemble(plan, results)
    cells = Cells.of(plan.dims, plan.grouping_sets)
    if is_dp(plan):
        opened: dict[str, np.ndarray] = {}
        for q in plan.data["quantities"]:  # whole units; a sum's unit is 2^-unit_bits
            units = _open(results, f"{q['name']}:noisy", "int")
            if "bins" in q:  # a histogram: cells x bins
                units = units.reshape(cells.out, int(q["bins"]))
            opened[q["name"]] = units * 2.0 ** -q["unit_bits"] if q["unit_bits"] else units
        frame = dp_frame(plan, opened)
        unknown = {c: frame[c].isna().to_numpy() for c in frame.attrs["suppressed"]}
        for i, key in enumerate(plan.keys):
            unknown[key["name"]] = np.array([lab[i] is None or key["domain"][lab[i]] is None for lab in cells.labels()])
        return post.apply(frame, plan.data.get("post"), unknown)
    flags = results[0].flags.reshape(len(plan.data["supports"]), -1)
    k = int(plan.data["params"]["min_cell_size"])
    margins = len(plan.grouping_sets) > 1
    columns: dict[str, list[Any]] = {}
    for i, key in enumerate(plan.keys):
        columns[key["name"]] = [
            key["domain"][lab[i]] if lab[i] is not None else ("(all)" if margins else None) for lab in cells.labels()
        ]
    reveals = {r["name"]: r for r in plan.data["reveals"]}
    suppressed: dict[str, list[bool]] = {}
    empty: dict[str, list[bool]] = {}
    for out in plan.data["outputs"]:
        names = [out["name"]] + (
            [f"{out['name']}_ci_low", f"{out['name']}_ci_high"] if len(out["reveals"]) == 3 else []
        )
        for col, rname in zip(names, out["reveals"], strict=True):
            r = reveals[rname]
            row = flags[int(r["support"])]
            values = _open(results, rname, r["encoding"])
            if "per" in out:
                values = values * float(out["per"])
            full: list[Any] = [f"<{k}"] * cells.out
            for at, v in zip(np.flatnonzero(row == RELEASED), values.tolist(), strict=True):
                full[at] = v
            nothing = 0 if out["kind"] in _COUNTS and col == out["name"] else None
            for at in np.flatnonzero(row == EMPTY):
                full[at] = nothing
            columns[col] = full
            suppressed[col] = (row == SUPPRESSED).tolist()
            empty[col] = (row == EMPTY).tolist()
    # An (other) row that releases nothing is left out: its flags are public, so it would show
    # nothing more, and a result without NULL or out-of-domain keys keeps the rows SQL gives.
    hidden = [np.asarray(suppressed[c]) | np.asarray(empty[c]) for c in suppressed]
    keep = ~(other_cells(cells.labels(), plan.keys) & np.all(hidden, axis=0))
    frame = pd.DataFrame(columns)[keep].reset_index(drop=True).infer_objects()
    frame.attrs["suppressed"] = {c: list(np.asarray(m)[keep]) for c, m in suppressed.items()}
    frame.attrs["empty"] = {c: list(np.asarray(m)[keep]) for c, m in empty.items()}  # released, not opened
    frame.attrs["opened"] = {c: len(m) - sum(m) - sum(empty[c]) for c, m in suppressed.items()}
    unknown = {  # withheld values, and the NULL statistics of empty cells: NULL in SQL
        c: np.asarray(frame.attrs["suppressed"][c], dtype=bool) | frame[c].isna().to_numpy() for c in suppressed
    }
    labels = [lab for lab, k in zip(cells.labels(), keep, strict=True) if k]
    for i, key in enumerate(plan.keys):  # margins and NULL groups: NULL in SQL
        unknown[key["name"]] = np.array([lab[i] is None or key["domain"][lab[i]] is None for lab in labels])
    return post.apply(frame, plan.data.get("post"), unknown)


def execute(plan: Plan, connections: Mapping[str, Any], without_data: Collection[str] = ()) -> pd.DataFrame:
    """Run ``plan`` over per-site DuckDB connections (name -> connection) in this process.

    For a per-site breakdown the names are those the plan was compiled with (``sites``).
    ``without_data`` names members that hold no data (their tables empty, no SITE slice).

    The DataFrame's ``attrs`` carry the plan digest, the reveal points, rounds and bytes of
    the MPC part (per member, maximum) and the wall-clock time of each phase.
    """
    if "model" in plan.data:  # a model statement's plan (site_agent.models)
        from ..models.statement import execute as execute_model

        return execute_model(plan, connections, tuple(without_data))
    t0 = time.perf_counter()
    per_site = [
        local_preaggregates(plan, con, name, holds_data=name not in without_data) for name, con in connections.items()
    ]
    t1 = time.perf_counter()
    members = share_inputs(per_site)
    results, stats = run_in_memory(lambda p: mpc_program(p, plan, members[p.index]), seed=os.urandom(16))
    if any(r.local_failed for r in results):
        raise LocalStepError()
    t2 = time.perf_counter()
    frame = assemble(plan, results)
    frame.attrs.update(
        {
            "plan_digest": plan.digest(),
            "reveals": [{"name": r["name"], "what": r["what"]} for r in plan.data["reveals"]],
            "rounds": max(s.rounds for s in stats),
            "bytes": sum(s.bytes_sent for s in stats),
            "seconds": {"local": t1 - t0, "mpc": t2 - t1, "total": time.perf_counter() - t0},
        }
    )
    return frame


def dry_run_stats(plan: Plan, sites: int = 3) -> list[tuple[str, Stats]]:
    """Cost of each MPC step, measured on all-zero inputs (communication does not depend on the
    data): (step op, Stats with the most rounds any member takes and the words all members send)."""
    zero = {s["name"]: _zero_shape(plan, s) for s in plan.data["inputs"]}
    inputs = {n: AShare(np.zeros((2, sites, *shape), dtype=np.uint64)) for n, shape in zero.items()}
    out: list[tuple[str, Stats]] = []
    before = [Stats(), Stats(), Stats()]
    for i, step in enumerate(plan.data["steps"]):
        prefix = Plan({**plan.data, "steps": plan.data["steps"][: i + 1]})
        _, stats = run_in_memory(lambda p, pl=prefix: mpc_program(p, pl, inputs), seed=0)  # type: ignore[misc]
        rounds = max(s.rounds - b.rounds for s, b in zip(stats, before, strict=True))
        words = sum(s.words_sent - b.words_sent for s, b in zip(stats, before, strict=True))
        messages = sum(s.messages - b.messages for s, b in zip(stats, before, strict=True))
        out.append((step["op"], Stats(rounds, messages, words)))
        before = stats
    return out


def _zero_shape(plan: Plan, spec: dict[str, Any]) -> tuple[int, ...]:
    return plan.input_shape(spec["name"])
