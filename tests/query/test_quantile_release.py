"""Released quantiles are shared by k persons within their (coarsened) grid bins, or flagged bad.

The kernel (:func:`released_quantiles`) against its plain reference on random histograms, and
whole queries over three DuckDB sites, each checked against pandas on the pooled rows: the
attacker's arithmetic on five quantiles of a five-patient group, the boundaries k - 1, k, k + 1,
a cell where no level works, and a large group that answers exactly as before.
"""

from __future__ import annotations

import os
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from site_agent.mpc.fixed import FixedPoint, decode_int
from site_agent.mpc.party import run_in_memory
from site_agent.mpc.sharing import deal, reconstruct
from site_agent.query import DisclosureRules, compile_query, schema_from_duckdb
from site_agent.query.execute import assemble, local_preaggregates, share_inputs
from site_agent.query.plan import Plan
from site_agent.query.program import mpc_program
from site_agent.query.quantiles import QuantileSpec, reference_quantiles, released_quantiles

from .quantile_reference import coarsened_type7

K = 5
GRID = (0.0, 1100.0, 1.0)
FP = FixedPoint(16)


# -- the kernel against its reference ---------------------------------------------------


@st.composite
def _cases(draw: st.DrawFn) -> tuple[np.ndarray, QuantileSpec, int]:
    lo = draw(st.sampled_from([0.0, -20.0, 35.5]))
    step = draw(st.sampled_from([1.0, 0.5, 0.25]))
    bins = draw(st.integers(1, 60))
    rows = draw(st.integers(1, 3))
    counts = draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 3, 4, 5, 6, 9]), min_size=rows * bins, max_size=rows * bins))
    q = draw(st.sampled_from([(1, 2), (1, 10), (9, 10), (1, 4), (3, 4), (1, 3), (7, 20), (0, 1), (1, 1)]))
    k = draw(st.integers(1, 7))
    return (
        np.asarray(counts, dtype=np.int64).reshape(rows, bins),
        QuantileSpec(q[0], q[1], (lo, lo + step * (bins - 1), step)),
        k,
    )


@settings(max_examples=30, deadline=None)
@given(first=_cases(), second=_cases())
def test_kernel_equals_plain_reference(
    first: tuple[np.ndarray, QuantileSpec, int], second: tuple[np.ndarray, QuantileSpec, int]
) -> None:
    """Two items of different grids in one batch (same cells, the first item's k)."""
    h1, s1, k = first
    h2, s2, _ = second
    h2 = np.resize(h2, (h1.shape[0], h2.shape[1]))
    dealt = [deal(h.astype(np.uint64)) for h in (h1, h2)]
    results, _ = run_in_memory(lambda p: released_quantiles(p, [d[p.index] for d in dealt], [s1, s2], k, FP))
    for i, (h, spec) in enumerate(((h1, s1), (h2, s2))):
        value = FP.decode(reconstruct([r[0][i] for r in results]))
        bad = decode_int(reconstruct([r[1][i] for r in results]))
        ref_value, ref_bad = reference_quantiles(h, spec, k)
        has = h.sum(axis=1) > 0
        np.testing.assert_array_equal(bad[has], ref_bad[has].astype(np.int64))
        ok = has & ~ref_bad
        np.testing.assert_allclose(value[ok], ref_value[ok], atol=2**-14)


# -- whole queries over three sites, checked with pandas on the pooled rows ---------------


def _connections(frames: list[pd.DataFrame]) -> dict[str, Any]:
    cons = {}
    for i, df in enumerate(frames):
        con = duckdb.connect()
        con.register("incoming", df)
        con.execute("CREATE TABLE stays AS SELECT * FROM incoming")
        con.unregister("incoming")
        cons[f"site{i}"] = con
    return cons


def _split(pooled: pd.DataFrame) -> list[pd.DataFrame]:
    """Rows dealt round-robin to three sites, so every group spans sites."""
    return [pooled.iloc[i::3].reset_index(drop=True) for i in range(3)]


def _with_bad_reveals(plan: Plan) -> Plan:
    """The plan, also opening each quantile's bad flag where its value is opened."""
    data = {**plan.data, "reveals": list(plan.data["reveals"]), "steps": [dict(s) for s in plan.data["steps"]]}
    by_value = {r["value"]: r for r in plan.data["reveals"]}
    extra = []
    for step in data["steps"]:
        if step["op"] == "quantile":
            for item in step["items"]:
                r = by_value[item["out"]]
                extra.append({**r, "name": f"{r['name']}_bad", "value": f"{item['out']}_bad", "encoding": "int"})
    data["reveals"] += extra
    reveal = data["steps"][-1]
    reveal["items"] = list(reveal["items"]) + [r["name"] for r in extra]
    return Plan(data)


def _query(pooled: pd.DataFrame, sql: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Released values per ward (suppressed cells left out) and each quantile's bad flags."""
    cons = _connections(_split(pooled))
    schema = schema_from_duckdb(cons["site0"], domains={"stays.ward": ["a", "b"]}, grids={"stays.days": GRID})
    plan = _with_bad_reveals(compile_query(sql, schema, DisclosureRules(min_cell_size=K), tuple(cons)))
    members = share_inputs([local_preaggregates(plan, con, name) for name, con in cons.items()])
    results, _ = run_in_memory(lambda p: mpc_program(p, plan, members[p.index]), seed=os.urandom(16))
    frame = assemble(plan, results).set_index("ward")
    bad = {
        r["name"].split(":")[0]: decode_int(reconstruct([res.opened[r["name"]] for res in results]))
        for r in plan.data["reveals"]
        if r["name"].endswith("_bad")
    }
    return frame, bad


def _stays(groups: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"ward": w, "days": d} for w, values in groups.items() for d in values],
    ).astype({"days": float})


def _shared_by_k(values: pd.Series, q: float, released: float) -> bool:
    """Whether ``released`` is the rule's value on the pooled rows, with at least K persons in
    each coarse bin it reads."""
    ref = coarsened_type7(values, q, GRID, K)
    return ref is not None and min(ref.persons) >= K and abs(ref.value - released) < 2**-14


QS = (0.1, 0.3, 0.5, 0.7, 0.9)
FIVE = "SELECT ward, COUNT(*) AS n, " + ", ".join(f"QUANTILE_CONT(days, {q}) AS q{i}" for i, q in enumerate(QS))


def _from_five_quantiles(quantiles: list[float]) -> list[float]:
    """The attacker: with N = 5, quantile q reads x_(floor h), x_(ceil h) at h = 4q; the five
    equations q1 = x0 + .4 (x1 - x0), q3 = x1 + .2 (x2 - x1), q5 = x2, q7 = x2 + .8 (x3 - x2),
    q9 = x3 + .6 (x4 - x3) solve for the five patients' values."""
    q1, q3, q5, q7, q9 = quantiles
    x2 = q5
    x1 = (q3 - 0.2 * x2) / 0.8
    x0 = (q1 - 0.4 * x1) / 0.6
    x3 = x2 + (q7 - x2) / 0.8
    x4 = x3 + (q9 - x3) / 0.6
    return [x0, x1, x2, x3, x4]


def test_five_quantiles_of_five_patients_do_not_give_their_values() -> None:
    rng = np.random.default_rng(7)
    target = [212.0, 230.0, 251.0, 264.0, 287.0]
    pooled = _stays({"a": target, "b": list(rng.integers(0, 1100, 300).astype(float))})
    truth = pooled[pooled.ward == "a"].days
    exact = [float(np.quantile(truth, q, method="linear")) for q in QS]
    assert sorted(_from_five_quantiles(exact)) == pytest.approx(target)  # the attack works on exact quantiles

    out, bad = _query(pooled, f"{FIVE} FROM stays GROUP BY ward")
    released = [float(out.loc["a", f"q{i}"]) for i in range(len(QS))]
    derived = _from_five_quantiles(released)
    assert sorted(derived) != pytest.approx(target, abs=0.5)
    assert not any(abs(d - t) < 0.5 for d in derived for t in target)  # no patient's day at all
    for i, (q, value) in enumerate(zip(QS, released, strict=True)):
        assert bad[f"q{i}"][0] == 0
        assert _shared_by_k(truth, q, value)


@pytest.mark.parametrize("m", [K - 1, K, K + 1])
def test_median_bin_at_the_threshold(m: int) -> None:
    """m persons on day 50 hold the median between 2K persons on day 10 and on day 90."""
    pooled = _stays({"a": [10.0] * 2 * K + [50.0] * m + [90.0] * 2 * K, "b": [300.0] * 20})
    truth = pooled[pooled.ward == "a"].days
    out, bad = _query(pooled, "SELECT ward, COUNT(*) AS n, MEDIAN(days) AS med FROM stays GROUP BY ward")
    released = float(out.loc["a", "med"])
    assert bad["med"][0] == 0
    assert _shared_by_k(truth, 0.5, released)
    if m >= K:
        assert released == pytest.approx(truth.median(), abs=2**-15)
    else:
        assert released != pytest.approx(50.0, abs=0.5)  # the m persons' day is not the answer


@pytest.mark.parametrize("right", [K - 1, K])
def test_interpolation_between_two_bins_needs_both(right: int) -> None:
    """The median falls between K persons on day 40 and ``right`` persons on day 60."""
    pooled = _stays({"a": [10.0] * K + [40.0] * K + [60.0] * right + [90.0] * (2 * K - right), "b": [300.0] * 20})
    truth = pooled[pooled.ward == "a"].days
    out, bad = _query(pooled, "SELECT ward, COUNT(*) AS n, MEDIAN(days) AS med FROM stays GROUP BY ward")
    released = float(out.loc["a", "med"])
    assert bad["med"][0] == 0
    assert _shared_by_k(truth, 0.5, released)
    assert (released == pytest.approx(50.0, abs=2**-15)) == (right >= K)


def test_no_level_shared_by_k_is_bad() -> None:
    """Every level has a bin boundary at day 1000: three patients just below, two just above."""
    pooled = _stays({"a": [995.0, 997.0, 999.0, 1001.0, 1003.0], "b": [300.0] * 20})
    out, bad = _query(pooled, "SELECT ward, COUNT(*) AS n, MEDIAN(days) AS med FROM stays GROUP BY ward")
    assert out.loc["a", "n"] == 5  # the cell itself is released, so its median must be suppressed
    assert out.loc["a", "med"] == f"<{K}"  # bad = 1 stops the cell (its flag is not opened either)
    assert bad["med"].tolist() == [0]  # ward b's, the only one opened


def test_large_group_answers_as_before() -> None:
    """Every fine bin around these quantiles holds far more than K persons: level 1 exactly."""
    rng = np.random.default_rng(11)
    pooled = _stays({"a": list(rng.integers(100, 140, 3000).astype(float)), "b": list(rng.normal(500, 50, 4000))})
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    sql = "SELECT ward, " + ", ".join(f"QUANTILE_CONT(days, {q}) AS q{i}" for i, q in enumerate(qs))
    out, bad = _query(pooled, f"{sql} FROM stays GROUP BY ward")
    grp = pooled[pooled.ward == "a"].days
    for i, q in enumerate(qs):
        assert out.loc["a", f"q{i}"] == pytest.approx(np.quantile(grp, q, method="linear"), abs=2**-15)
        assert bad[f"q{i}"][0] == 0
