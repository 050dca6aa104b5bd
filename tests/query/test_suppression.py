"""Disclosure control: small cells show as <k, empty cells as 0, and no suppressed value follows
from the released cells and margins of a result, by any linear combination an analyst may try."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from site_agent.mpc.party import run_in_memory
from site_agent.query import (
    DisclosureRules,
    compile_query,
    local_preaggregates,
    mpc_program,
    schema_from_duckdb,
    share_inputs,
)
from site_agent.query.cells import Cells
from site_agent.query.disclosure import SUPPRESSED as SUPPRESSED_FLAG
from site_agent.query.disclosure import close_pattern, determined
from site_agent.query.numeric import Float

from .conftest import Consortium, K

DOC = Path(__file__).resolve().parents[2] / "docs" / "privacy-suppression.md"

SUPPRESSED = f"<{K}"
Cell = tuple[object, ...]


def _attack(frame: pd.DataFrame, keys: list[str], column: str) -> dict[Cell, float]:
    """The analyst's best exact derivation from one result of an additive column (a count or a
    sum): every relation "margin = sum of the cells it covers" among the result's rows, with
    the released values as knowns (an empty cell's NULL read as 0). Solves the linear system
    for the suppressed cells by least squares and returns each one the system determines (its
    unit vector lies in the row space, by floating-point rank), with the derived value."""
    cells = [tuple(row[k] for k in keys) for _, row in frame.iterrows()]
    values = frame[column].tolist()
    hidden = [i for i, v in enumerate(values) if v == SUPPRESSED]
    known = np.array([0.0 if v == SUPPRESSED or pd.isna(v) else float(v) for v in values])
    rows = []
    for p in cells:
        for d in range(len(keys)):
            if p[d] != "(all)":
                continue
            children = [
                i
                for i, c in enumerate(cells)
                if c[d] != "(all)" and all(c[j] == p[j] for j in range(len(keys)) if j != d)
            ]
            if children:
                r = np.zeros(len(cells))
                r[children] = 1.0
                r[cells.index(p)] = -1.0
                rows.append(r)
    if not hidden or not rows:
        return {}
    a = np.array(rows)
    shown = [i for i in range(len(cells)) if i not in hidden]
    unknown, rhs = a[:, hidden], -a[:, shown] @ known[shown]
    rank = np.linalg.matrix_rank(unknown)
    solution = np.linalg.lstsq(unknown, rhs, rcond=None)[0]
    found = {}
    for j, i in enumerate(hidden):
        unit = np.zeros((1, len(hidden)))
        unit[0, j] = 1.0
        if np.linalg.matrix_rank(np.vstack([unknown, unit])) == rank:
            found[cells[i]] = float(solution[j])
    return found


def test_small_cells_show_as_below_k_and_are_never_opened(lung: Consortium) -> None:
    plan = compile_query(
        "SELECT ph_ecog, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY ph_ecog", lung.schema, lung.rules
    )
    per_site = [local_preaggregates(plan, con) for con in lung.cons.values()]
    members = share_inputs(per_site)
    results, _ = run_in_memory(lambda p: mpc_program(p, plan, members[p.index]), seed=1)
    flags = results[0].flags.reshape(len(plan.data["supports"]), -1)
    ref = lung.pooled["lung"].ph_ecog.value_counts(dropna=False)
    small = [i for i, v in enumerate([0, 1, 2, 3, None]) if (ref.get(v, 0) if v is not None else ref[np.nan]) < K]
    assert small == [3, 4]  # ECOG 3 (one patient) and NULL (one patient)
    assert flags[0, small].tolist() == [1, 1]
    for share in results[0].opened.values():  # only the three large cells' values were ever opened
        assert (share.mant if isinstance(share, Float) else share).shape == (3,)
    out = lung.query("SELECT ph_ecog, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY ph_ecog")
    assert out["n"].tolist()[3:] == [SUPPRESSED, SUPPRESSED]
    assert out["mean_age"].tolist()[3:] == [SUPPRESSED, SUPPRESSED]


def test_rollup_margin_does_not_reveal_single_small_cell(generated: Consortium) -> None:
    # region 'east' is rare: (sex, east) cells are below k, and margins per sex are released.
    out = generated.query("SELECT sex, region, COUNT(*) AS n, SUM(bmi) AS s FROM patients GROUP BY ROLLUP(sex, region)")
    p = generated.pooled["patients"]
    small = p.groupby(["sex", "region"]).size()
    assert (small.xs("east", level="region") < K).all()
    assert (out["n"] == SUPPRESSED).sum() >= 4  # each sex's east cell and one more in its line
    for column in ("n", "s"):
        assert _attack(out, ["sex", "region"], column) == {}
    for (sex, region), n in small.items():  # what is released is right
        row = out[(out.sex == sex) & (out.region == region)].iloc[0]
        if row["n"] != SUPPRESSED:
            assert row["n"] == n


def test_cube_has_no_derivable_cell(generated: Consortium) -> None:
    out = generated.query("SELECT ward, region, COUNT(*) AS n, AVG(age) AS a FROM patients GROUP BY CUBE(ward, region)")
    assert (out["n"] == SUPPRESSED).any()
    assert _attack(out, ["ward", "region"], "n") == {}
    released = out[out["n"] != SUPPRESSED]
    p = generated.pooled["patients"]
    for _, row in released.iterrows():
        sel = p
        if row["ward"] != "(all)":
            sel = sel[sel.ward == row["ward"]]
        if row["region"] != "(all)":
            sel = sel[sel.region == row["region"]]
        assert row["n"] == len(sel)


def test_attacker_would_succeed_without_secondary_suppression(generated: Consortium) -> None:
    """The differencing attack itself works: with only primary suppression it recovers cells."""
    out = generated.query("SELECT sex, region, COUNT(*) AS n FROM patients GROUP BY ROLLUP(sex, region)")
    p = generated.pooled["patients"]
    # The (other) cells hold nobody here; a naive release would not show them at all.
    assert p.sex.isin(["F", "M"]).all() and p.region.isin(["north", "south", "east"]).all()
    naive = out[(out.sex != "(other)") & (out.region != "(other)")].copy()
    truth = p.groupby(["sex", "region"]).size()
    for i, row in naive.iterrows():
        if row["region"] != "(all)" and row["sex"] != "(all)":
            n = int(truth.get((row["sex"], row["region"]), 0))
            naive.loc[i, "n"] = SUPPRESSED if n < K else n
        elif row["sex"] != "(all)":
            naive.loc[i, "n"] = int((p.sex == row["sex"]).sum())
        else:
            naive.loc[i, "n"] = len(p)
    recovered = _attack(naive, ["sex", "region"], "n")
    assert recovered and all(recovered[c] == truth.get(c, 0) for c in recovered)


def test_per_value_support_suppresses_sparse_column(lung: Consortium) -> None:
    # A cell large enough by rows but with too few non-NULL values of the column.
    out = lung.query(
        "SELECT sex, COUNT(*) AS n, AVG(meal_cal) AS meal FROM lung WHERE meal_cal IS NULL OR age > 80 GROUP BY sex"
    )
    sel = lung.pooled["lung"].query("meal_cal != meal_cal or age > 80")
    for sex, grp in sel.groupby("sex"):
        row = out.set_index("sex").loc[sex]
        assert row["n"] == (len(grp) if len(grp) >= K else SUPPRESSED)
        if grp.meal_cal.notna().sum() == 0:
            assert pd.isna(row["meal"])  # an empty set: released, NULL as SQL's AVG over no rows
        elif grp.meal_cal.notna().sum() < K:
            assert row["meal"] == SUPPRESSED
        else:
            assert row["meal"] == pytest.approx(grp.meal_cal.mean(), rel=1e-6)


# -- the zero-cell attacks (issue family 3), as the attacker computes them ---------------------

TARGET = "age = 74 AND sex = 1 AND inst = 12"  # quasi-identifiers of one patient


def test_empty_cell_does_not_protect_the_target(lung: Consortium) -> None:
    out = lung.query(
        f"SELECT CASE WHEN {TARGET} THEN 'target' WHEN age < 0 THEN 'never' ELSE 'rest' END AS g, "
        "COUNT(*) AS n, SUM(time) AS t FROM lung GROUP BY ROLLUP(g)"
    ).set_index("g")
    p = lung.pooled["lung"]
    target = p[(p.age == 74) & (p.sex == 1) & (p.inst == 12)]
    assert len(target) == 1  # the premise: one patient
    for column, truth in (("n", 1), ("t", float(target.time.iloc[0]))):
        # (all) minus every released child: what is left is the target alone, were 'rest' released
        derived = out.loc["(all)", column] - sum(
            v for v in out[column].drop("(all)") if v != SUPPRESSED and not pd.isna(v)
        )
        assert derived != truth
        assert _attack(out.reset_index(), ["g"], column) == {}
    assert out.loc["(all)", "n"] == len(p) and out.loc["(all)", "t"] == pytest.approx(p.time.sum())
    assert out.loc["never", "n"] == 0 and pd.isna(out.loc["never", "t"])  # empty: released, never protection


def test_natural_ecog_bins_do_not_leak_the_one_ecog_3_patient(lung: Consortium) -> None:
    bins = " ".join(f"WHEN ph_ecog = {v} THEN '{v}'" for v in range(4))
    out = lung.query(
        f"SELECT CASE {bins} ELSE '4' END AS ecog, COUNT(*) AS n, SUM(time) AS t, AVG(age) AS a "
        "FROM lung WHERE ph_ecog IS NOT NULL GROUP BY ROLLUP(ecog)"
    ).set_index("ecog")
    p = lung.pooled["lung"].dropna(subset=["ph_ecog"])
    truth = p.groupby("ph_ecog").agg(n=("time", "size"), t=("time", "sum"))
    assert truth.loc[3.0, "n"] == 1 and 4.0 not in truth.index  # one ECOG-3 patient, nobody in 4
    for column in ("n", "t"):
        derived = out.loc["(all)", column] - sum(
            v for v in out[column].drop("(all)") if v != SUPPRESSED and not pd.isna(v)
        )
        assert derived != truth.loc[3.0, column]
        assert _attack(out.reset_index(), ["ecog"], column) == {}
    assert out.loc["4", "n"] == 0 and pd.isna(out.loc["4", "t"]) and pd.isna(out.loc["4", "a"])
    assert out.loc["3", "n"] == SUPPRESSED
    for v in ("0", "1"):  # the large bins still answer exactly
        assert out.loc[v, "n"] == truth.loc[float(v), "n"]
        assert out.loc[v, "a"] == pytest.approx(p[p.ph_ecog == float(v)].age.mean(), rel=1e-6)


# -- tables of chosen counts ------------------------------------------------------------------


def _table(counts: np.ndarray) -> Consortium:
    """Table t(a, b, x) with counts[i, j] rows of (a{i}, b{j}) (x = 1, 2, ...), dealt to three
    sites in turn; minimum cell size K."""
    counts = np.atleast_2d(counts)
    rows = [(f"a{i}", f"b{j}") for (i, j), n in np.ndenumerate(counts) for _ in range(int(n))]
    t = pd.DataFrame(rows, columns=["a", "b"], dtype=object)
    t["x"] = np.arange(1, len(t) + 1, dtype=np.float64)
    frames = {f"site{s}": {"t": t.iloc[s::3].reset_index(drop=True)} for s in range(3)}
    probe = duckdb.connect()
    probe.execute("CREATE TABLE t (a VARCHAR, b VARCHAR, x DOUBLE)")
    domains = {"t.a": [f"a{i}" for i in range(counts.shape[0])], "t.b": [f"b{j}" for j in range(counts.shape[1])]}
    return Consortium(frames, schema_from_duckdb(probe, domains=domains), DisclosureRules(min_cell_size=K))


def _shown(out: pd.DataFrame, key: str, column: str = "n") -> dict[Any, Any]:
    return dict(zip(out[key], out[column], strict=True))


@pytest.mark.parametrize("n", [K - 1, K, K + 1])
def test_primary_threshold_and_empty_cells(n: int) -> None:
    out = _table(np.array([[n], [0], [1], [40]])).query(
        "SELECT a, COUNT(*) AS n, SUM(x) AS s, AVG(x) AS m, STDDEV(x) AS sd FROM t GROUP BY a"
    )
    shown = _shown(out, "a")
    assert shown == {"a0": n if n >= K else SUPPRESSED, "a1": 0, "a2": SUPPRESSED, "a3": 40}
    empty = out[out.a == "a1"].iloc[0]
    assert pd.isna(empty["s"]) and pd.isna(empty["m"]) and pd.isna(empty["sd"])  # SQL over no rows
    assert out.attrs["suppressed"]["n"] == [n < K, False, True, False]


@pytest.mark.parametrize(("x", "y"), [(2, K - 3), (2, K - 2), (2, K - 1), (3, K - 1)])
def test_line_total_of_suppressed_cells_must_reach_k(x: int, y: int) -> None:
    """Two small cells in a released margin: their total follows by subtraction. Below k, the
    smallest other non-empty cell (20) is suppressed too; from k on, nothing else is."""
    out = _table(np.array([[x], [y], [0], [20], [30]])).query("SELECT a, COUNT(*) AS n FROM t GROUP BY ROLLUP(a)")
    shown = _shown(out, "a")
    assert shown["a0"] == shown["a1"] == SUPPRESSED and shown["a2"] == 0 and shown["a4"] == 30
    assert shown["(all)"] == x + y + 50
    assert shown["a3"] == (SUPPRESSED if x + y < K else 20)
    hidden = sum(n for a, n in zip("01234", (x, y, 0, 20, 30), strict=True) if shown[f"a{a}"] == SUPPRESSED)
    assert hidden == 0 or hidden >= K  # what the attacker gets from (all) minus the released cells
    assert _attack(out, ["a"], "n") == {}


def test_single_small_cell_takes_the_smallest_non_empty_partner() -> None:
    shown = _shown(
        _table(np.array([[0], [3], [0], [9], [7]])).query("SELECT a, COUNT(*) AS n FROM t GROUP BY ROLLUP(a)"), "a"
    )
    assert shown == {"a0": 0, "a1": SUPPRESSED, "a2": 0, "a3": 9, "a4": SUPPRESSED, "(all)": 19}


TWO_LINES = np.array([[1, 0, 20], [0, 6, 0], [6, 4, 0]])


def test_public_check_finds_a_cell_fixed_by_lines_together() -> None:
    """CUBE over TWO_LINES after the passes: every line has 0 or >= 2 suppressed cells, each
    derivable total is >= k, yet (b0 + b2) - a0 = (total - b1) - a0 = 37 - 10 - 21 gives the
    cell (a2, b0) = 6. The pattern alone shows it (exact rank); the support is suppressed."""
    cells = Cells.of((3, 3), [(0, 1), (0,), (1,), ()])
    after_passes = [1, 2, 1, 2, 1, 2, 1, 1, 2, 0, 1, 1, 1, 0, 1, 0]  # as the shares' passes leave it
    hidden = np.array(after_passes) == SUPPRESSED_FLAG
    assert np.flatnonzero(determined(hidden, cells.lines)).tolist() == [6]  # (a2, b0)
    flags = close_pattern(np.array([after_passes], dtype=np.uint64), cells.lines)
    assert flags[0].tolist() == [1 if f != 2 else 2 for f in after_passes]

    out = _table(TWO_LINES).query("SELECT a, b, COUNT(*) AS n, SUM(x) AS s FROM t GROUP BY CUBE(a, b)")
    cube = {(a, b): n for a, b, n in zip(out.a, out.b, out.n, strict=True)}
    assert cube[("a0", "b1")] == 0 and cube[("a2", "b0")] == SUPPRESSED and cube[("(all)", "(all)")] == SUPPRESSED
    for column in ("n", "s"):
        assert _attack(out, ["a", "b"], column) == {}


def test_cube_keeps_every_margin_when_the_inner_cells_protect_each_other() -> None:
    """One small cell (3) in a 2 x 2 CUBE: its row and column partners are suppressed, then the
    last inner cell too (a line never has one suppressed cell). All four margins and the total
    stay released and exact; the inner cells keep one free parameter between them."""
    out = _table(np.array([[20, 20], [6, 3]])).query("SELECT a, b, COUNT(*) AS n FROM t GROUP BY CUBE(a, b)")
    cube = {(a, b): n for a, b, n in zip(out.a, out.b, out.n, strict=True)}
    inner = [(f"a{i}", f"b{j}") for i in range(2) for j in range(2)]
    assert [cube[c] for c in inner] == [SUPPRESSED] * 4
    assert [cube[("a0", "(all)")], cube[("a1", "(all)")], cube[("(all)", "b0")], cube[("(all)", "b1")]] == [
        40,
        9,
        26,
        23,
    ]
    assert cube[("(all)", "(all)")] == 49
    assert _attack(out, ["a", "b"], "n") == {}


def test_site_margins_are_lines_too(generated: Consortium) -> None:
    """CUBE(SITE, region): the rare region's per-site cells are small or empty; no per-site
    count follows from the released cells and margins, and what is released is each site's own
    DuckDB count."""
    out = generated.query("SELECT SITE, region, COUNT(*) AS n, SUM(bmi) AS s FROM patients GROUP BY CUBE(SITE, region)")
    for column in ("n", "s"):
        assert _attack(out, ["site", "region"], column) == {}
    shown = {(a, b): n for a, b, n in zip(out.site, out.region, out.n, strict=True)}
    for site, con in generated.cons.items():
        truth = dict(con.execute("SELECT region, COUNT(*) FROM patients GROUP BY region").fetchall())
        for region in ("north", "south", "east"):
            n = truth.get(region, 0)
            assert shown[(site, region)] in ((SUPPRESSED, n) if n else (0,))
            if 0 < n < K:
                assert shown[(site, region)] == SUPPRESSED
    assert shown[("(all)", "(all)")] == len(generated.pooled["patients"])


# -- property: no suppressed cell follows from any released table ------------------------------

_COUNT = st.sampled_from([0, 0, 0, 1, 2, K - 1, K, K + 1, 9, 25])


@st.composite
def _tables(draw: st.DrawFn) -> tuple[np.ndarray, str]:
    rows, cols = draw(st.integers(2, 3)), draw(st.integers(2, 3))
    counts = np.array([[draw(_COUNT) for _ in range(cols)] for _ in range(rows)])
    return counts, draw(st.sampled_from(["", "ROLLUP", "CUBE"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(_tables())
def test_released_tables_determine_no_suppressed_cell(case: tuple[np.ndarray, str]) -> None:
    counts, margins = case
    con = _table(counts)
    keys = f"{margins}(a, b)" if margins else "a, b"
    out = con.query(f"SELECT a, b, COUNT(*) AS n, SUM(x) AS s FROM t GROUP BY {keys}")
    t = con.pooled["t"]
    truth: dict[Cell, tuple[int, float]] = {}
    for _, row in out.iterrows():
        sel = t[((t.a == row.a) | (row.a == "(all)")) & ((t.b == row.b) | (row.b == "(all)"))]
        truth[(row.a, row.b)] = (len(sel), float(sel.x.sum()))
        n, s = truth[(row.a, row.b)]
        if row.n != SUPPRESSED:
            assert row.n == n and (pd.isna(row.s) if n == 0 else row.s == pytest.approx(s))
        else:
            assert n > 0  # an empty cell is never suppressed
        if 0 < n < K:
            assert row.n == SUPPRESSED
    if not margins:  # no margins, nothing to protect: exactly the cells with 1..k-1 persons
        assert [v == SUPPRESSED for v in out.n] == [0 < truth[(a, b)][0] < K for a, b in zip(out.a, out.b, strict=True)]
    for column in ("n", "s"):
        assert _attack(out, ["a", "b"], column) == {}
    shown = {(a, b): v for a, b, v in zip(out.a, out.b, out.n, strict=True)}
    for (a, b), v in shown.items():  # each line with a released parent: the hidden total is 0 or >= k
        if v == SUPPRESSED:
            continue
        lines = [
            [c for c in shown if c[0] != "(all)" and c[1] == b] if a == "(all)" else [],
            [c for c in shown if c[1] != "(all)" and c[0] == a] if b == "(all)" else [],
        ]
        for children in lines:
            hidden = sum(truth[c][0] for c in children if shown[c] == SUPPRESSED)
            assert hidden == 0 or hidden >= K, (a, b, children)


def test_documented_example_shows_what_it_says() -> None:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    out = namespace["out"]
    assert out["n"].tolist() == [30, SUPPRESSED, SUPPRESSED, 0, 51]
    assert out["mean_x"].tolist()[:3] == [pytest.approx(1.0), SUPPRESSED, SUPPRESSED]
    assert pd.isna(out["mean_x"][3]) and out["mean_x"][4] == pytest.approx(73 / 51)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.tuples(st.integers(1, 4), st.integers(1, 4)),
    st.booleans(),
    st.lists(st.booleans(), min_size=25, max_size=25),
)
def test_public_check_agrees_with_a_rank_attacker(dims: tuple[int, int], cube: bool, mask: list[bool]) -> None:
    """determined() against an independent reference: cell j is fixed by the released cells iff
    appending e_j to the line equations over the hidden cells leaves the (numpy) rank unchanged."""
    sets = [(0, 1), (0,), (1,), ()] if cube else [(0, 1), (0,), ()]
    cells = Cells.of(dims, sets)
    hidden = np.array(mask[: cells.out])
    equations = np.zeros((len(cells.lines), cells.out))
    for i, line in enumerate(cells.lines):
        members = line[line >= 0]
        equations[i, members[1:]] = 1.0
        equations[i, members[0]] = -1.0
    unknown = equations[:, hidden]
    rank = np.linalg.matrix_rank(unknown) if unknown.size else 0
    expected = np.zeros(cells.out, dtype=bool)
    for j, cell in enumerate(np.flatnonzero(hidden)):
        unit = np.zeros((1, unknown.shape[1]))
        unit[0, j] = 1.0
        expected[cell] = np.linalg.matrix_rank(np.vstack([unknown, unit])) == rank
    assert determined(hidden, cells.lines).tolist() == expected.tolist()
