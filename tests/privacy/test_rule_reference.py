"""The release rule on shares equals the rule computed in the clear with pandas.

Random small tables (NULLs included, groups of a few rows so that small query sets are
common) split over three sites; a query with a conditional aggregate, a mean and a count. The
reference below follows docs/privacy.md sentence by sentence on the pooled rows, independently
of ``site_agent.privacy``; the MPC result must withhold exactly the cells it withholds.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from hypothesis import example, given, settings
from hypothesis import strategies as st

from site_agent.query import DisclosureRules, compile_query, execute, schema_from_duckdb

K = 3
QUERY = (
    "SELECT g, COUNT(*) AS n, SUM(CASE WHEN x > {a} THEN y ELSE 0 END) AS s, AVG(y) AS m, "
    "SUM(CASE WHEN x > {b} THEN y END) AS u FROM t GROUP BY g"
)


def small(n: int) -> bool:
    return 1 <= n < K


def reference(pooled: pd.DataFrame, a: int, b: int) -> dict[str, list[bool]]:
    """Withheld cells per output, by the documented rule (plain GROUP BY: no margins)."""
    out: dict[str, list[bool]] = {"n": [], "s": [], "m": [], "u": []}
    for g in ("p", "q"):
        cell = pooled[pooled.g == g]
        b1 = (cell.x > a).fillna(False).astype(bool)  # the THEN branch; x NULL goes to ELSE
        b2 = ~b1
        y = cell.y.notna().to_numpy()
        arg_present = (b1 & y) | b2  # ELSE 0 is never NULL
        out["n"].append(small(len(cell)))
        s_checks = [b1.sum(), (b1 & y).sum(), b2.sum(), arg_present.sum()]
        pairs = [b2.sum(), b1.sum(), len(cell)]  # |C xor B1|, |C xor B2|, |B1 xor B2|
        out["s"].append(any(small(int(c)) for c in s_checks + pairs) or arg_present.sum() == 0)
        present = int(y.sum())
        out["m"].append(small(len(cell)) or small(int(present)) or present == 0)
        b3 = (cell.x > b).fillna(False).astype(bool).to_numpy()  # u's only branch (ELSE NULL adds nothing)
        u_present = int((b3 & y).sum())
        u_checks = [b3.sum(), u_present]
        u_pairs = [len(cell) - b3.sum(), (b1.to_numpy() ^ b3).sum(), (b2.to_numpy() ^ b3).sum()]
        out["u"].append(any(small(int(c)) for c in u_checks + u_pairs) or u_present == 0)
    return out


frames = st.lists(
    st.tuples(
        st.sampled_from(["p", "q"]),
        st.one_of(st.none(), st.integers(0, 9)),
        st.one_of(st.none(), st.integers(0, 50)),
    ),
    min_size=4,
    max_size=24,
)


@settings(max_examples=40, deadline=None)
@example(  # u's set (x > 5) and s's THEN branch (x > 4) differ by the one person with x = 5
    rows=[("p", 0, 1), ("p", 0, 1), ("p", 0, 1), ("p", 5, 1), ("p", 9, 1), ("p", 9, 1), ("p", 9, 1)],
    a=4,
    step=1,
    cuts=(2, 5),
)
@given(
    rows=frames,
    a=st.integers(0, 9),
    step=st.integers(1, 4),
    cuts=st.tuples(st.integers(0, 24), st.integers(0, 24)),
)
def test_withheld_cells_equal_the_reference(
    rows: list[tuple[str, int | None, int | None]], a: int, step: int, cuts: tuple[int, int]
) -> None:
    pooled = pd.DataFrame(rows, columns=["g", "x", "y"]).astype({"x": "Float64", "y": "Float64"})
    pooled.insert(0, "id", range(len(pooled)))
    lo, hi = sorted(c % (len(pooled) + 1) for c in cuts)
    cons = {}
    for name, part in (("s0", pooled[:lo]), ("s1", pooled[lo:hi]), ("s2", pooled[hi:])):
        con = duckdb.connect()
        con.execute("CREATE TABLE t (id BIGINT, g VARCHAR, x DOUBLE, y DOUBLE)")
        if len(part):
            con.register("part", part.astype({"x": float, "y": float}))
            con.execute("INSERT INTO t SELECT * FROM part")
        cons[name] = con
    schema = schema_from_duckdb(cons["s0"], domains={"t.g": ["p", "q"]}, persons={"t": "id"})
    plan = compile_query(QUERY.format(a=a, b=a + step), schema, DisclosureRules(min_cell_size=K), tuple(cons))
    result = execute(plan, cons)
    hidden, empty = result.attrs["suppressed"], result.attrs["empty"]
    # a count of 0 is shown as 0; a statistic over no value is NULL: neither is opened
    got = {k: hidden[k] if k == "n" else [h or e for h, e in zip(hidden[k], empty[k], strict=True)] for k in hidden}
    expected = reference(pooled, a, a + step)
    assert {k: got[k] for k in expected} == expected
    released = result
    for i, g in enumerate(("p", "q")):
        cell = pooled[pooled.g == g]
        if not expected["n"][i]:
            assert released.n[i] == len(cell)
        if not expected["m"][i]:
            assert np.isclose(released.m[i], cell.y.mean())
