"""The dominance rule for sums (policy ``dominance = [n, p]``, docs/privacy.md), in process.

References are computed here with pandas on the pooled data: per cell, each person's summed
value at their site, absolute, the n largest against p percent of the total. The in-process
path runs the same local SQL, sharing and MPC program as the agents.
"""

from __future__ import annotations

import dataclasses
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from site_agent.errors import ConfigError, UnsupportedQuery
from site_agent.policy.model import Policy, combine, load_policy, render_policy_template
from site_agent.privacy.dominance import CAP, site_top, splits
from site_agent.query import DisclosureRules, compile_query, explain, schema_from_duckdb
from site_agent.query.cells import Cells

from ..integration.conftest import Running
from ..query.conftest import Consortium, _connections
from .conftest import PLANTED, derive, value

GROUPS = ["a", "b", "c", "d"]


def _consortium(frames: list[pd.DataFrame], rule: tuple[int, int] | None) -> Consortium:
    tables = {f"site{s}": {"t": f.reset_index(drop=True)} for s, f in enumerate(frames)}
    con = _connections({"probe": tables["site0"]})["probe"]
    schema = schema_from_duckdb(con, domains={"t.g": GROUPS}, persons={"t": "pid"})
    return Consortium(tables, schema, DisclosureRules(min_cell_size=5, dominance=rule))


def _rows(site: int, group: str, values: list[float], first: int = 0) -> pd.DataFrame:
    """One row per value, each its own person (``s<site>-<i>``)."""
    pids = [f"s{site}-{group}-{first + i}" for i in range(len(values))]
    return pd.DataFrame({"pid": pids, "g": group, "x": np.asarray(values, dtype=np.float64)})


def _dominated(frames: list[pd.DataFrame], n: int, p: int) -> dict[str, bool]:
    """The reference: per group, persons' values summed at their site, absolute, top n vs p%."""
    rows = pd.concat([f.assign(site=s) for s, f in enumerate(frames)], ignore_index=True)
    per_person = rows.groupby(["g", "site", "pid"]).x.sum().abs()
    out = {}
    for g, values in per_person.groupby(level="g"):
        top = values.sort_values(ascending=False).iloc[:n].sum()
        out[str(g)] = bool(top * 100 > p * values.sum())
    return out


@pytest.mark.parametrize(("big", "released"), [(13.25, True), (13.5, True), (13.75, False)])
def test_threshold_boundary(big: float, released: bool) -> None:
    """(1, 60): nine persons with 1 and one with ``big``; at 13.5 the largest is exactly 60% of the
    total (released: the rule is "more than p percent"), a quarter above it is withheld."""
    frames = [_rows(0, "a", [1, 1, 1, 1]), _rows(1, "a", [1, 1, 1, 1, 1]), _rows(2, "a", [big])]
    frames[0] = pd.concat([frames[0], _rows(0, "b", [2.0] * 6)])
    c = _consortium(frames, (1, 60))
    out = c.query("SELECT g, COUNT(*) AS n, SUM(x) AS s, AVG(x) AS m FROM t GROUP BY g")
    a = out[out.g == "a"]
    assert a.n.item() == 10  # counts are not subject to the rule
    if released:
        assert a.s.item() == pytest.approx(9 + big, abs=1e-9)
        assert a.m.item() == pytest.approx((9 + big) / 10, rel=1e-6)
    else:
        assert a.s.item() == "<5" and a.m.item() == "<5"
    assert out[out.g == "b"].s.item() == 12.0


@pytest.mark.parametrize(("second", "released"), [(6.0, True), (6.25, False)])
def test_threshold_boundary_two_largest(second: float, released: bool) -> None:
    """(2, 50) with the two largest at different sites: 14 + 6 against 40 is exactly 50%."""
    frames = [_rows(0, "a", [14, 4, 4]), _rows(1, "a", [second, 4]), _rows(2, "a", [4, 4])]
    c = _consortium(frames, (2, 50))
    got = value(c.query("SELECT COUNT(*) AS n, SUM(x) AS s FROM t WHERE g = 'a'"), "s")
    assert (got == 14 + second + 20) if released else got is None


def test_a_persons_rows_add_up_first() -> None:
    """(1, 60): one person's two rows of 7 and 6.75 make 13.75, above 60% of 22.75, though each
    row alone is below it; with the rows split over two persons the cell is released."""
    rows = _rows(2, "a", [7.0, 6.75])
    split = [_rows(0, "a", [1, 1, 1, 1]), _rows(1, "a", [1, 1, 1, 1, 1]), rows]
    same = [split[0], split[1], rows.assign(pid="s2-one")]
    assert value(_consortium(split, (1, 60)).query("SELECT SUM(x) AS s FROM t"), "s") == 22.75
    assert value(_consortium(same, (1, 60)).query("SELECT SUM(x) AS s FROM t"), "s") is None


def test_random_tables_against_pandas() -> None:
    """Random groups at three sites, large values planted in some (one site, either sign): a
    group's sum is released exactly when the pandas reference says it is not dominated, and
    then equals pandas."""
    rng = np.random.default_rng(7)
    for n, p in ((1, 50), (2, 70), (3, 85)):
        planted = {"a": 5000.0, "b": float(rng.integers(200, 3000)), "c": -float(rng.integers(200, 3000))}
        where = {g: int(rng.integers(0, 3)) for g in planted}
        frames = []
        for s in range(3):
            parts = []
            for g in GROUPS:
                values = list(rng.integers(1, 40, size=int(rng.integers(3, 8))).astype(float))
                if g in planted and s == where[g]:
                    values[0] = planted[g]
                parts.append(_rows(s, g, values))
            frames.append(pd.concat(parts))
        out = _consortium(frames, (n, p)).query("SELECT g, COUNT(*) AS k, SUM(x) AS s FROM t GROUP BY g")
        truth = pd.concat(frames).groupby("g").x.sum()
        dominated = _dominated(frames, n, p)
        assert any(dominated.values()) and not all(dominated.values()), dominated
        for g in GROUPS:
            got = out[out.g == g].s.item()
            assert (got == "<5") if dominated[g] else got == pytest.approx(truth[g]), (n, p, g)


def test_offsets_do_not_hide_a_dominant_value() -> None:
    """``SUM(x + 1e6)`` is ``SUM(x) + 1e6 * COUNT(x)``: the rule reads the column part, so the
    attacker's ``SUM(x + 1e6) - 1e6 * n`` is withheld where ``SUM(x)`` is, and a CASE with
    offsets in its branches too."""
    frames = [_rows(0, "a", [1000.0, 3, 4]), _rows(1, "a", [3, 5, 2]), _rows(2, "a", [4, 4])]
    c = _consortium(frames, (1, 80))
    out = c.query(
        "SELECT COUNT(*) AS n, SUM(x + 1000000) AS s, AVG(2 * x - 7) AS m, "
        "SUM(CASE WHEN x > 3 THEN x + 500 ELSE x - 500 END) AS c, STDDEV(x) AS sd FROM t"
    )
    n = value(out, "n")
    assert n == 8
    assert derive(value(out, "s"), -1e6 * n) is None
    assert value(out, "m") is None and value(out, "c") is None and value(out, "sd") is None


def test_differences_of_sums_are_checked() -> None:
    """(1, 70): the whole cell is not dominated, but the planted value makes 94% of the set S
    ("old"). ``SUM(x) - SUM(CASE WHEN NOT old THEN x END)``, and ``2 SUM(x)`` minus a sum that
    doubles x outside S, are S's sum: the later sum is withheld, the first released as pandas
    has it, and sums, means and SDs of one set are not affected."""
    rng = np.random.default_rng(3)
    frames = []
    for s in range(3):
        frame = _rows(s, "a", list(rng.integers(10, 20, 40).astype(float))).assign(old=rng.random(40) < 0.15)
        if s == 1:
            frame.loc[0, ["x", "old"]] = [3000.0, True]
        frames.append(frame)
    pooled = pd.concat(frames)
    old = pooled[pooled.old].x
    assert old.max() * 100 > 70 * old.sum() and not _dominated(frames, 1, 70)["a"]
    c = _consortium(frames, (1, 70))
    out = c.query("SELECT COUNT(*) AS n, SUM(x) AS a, SUM(CASE WHEN NOT old THEN x END) AS b FROM t")
    assert value(out, "a") == pooled.x.sum() and derive(value(out, "a"), value(out, "b"), sign=(1, -1)) is None
    out = c.query("SELECT SUM(x) AS a, SUM(CASE WHEN old THEN x ELSE 2 * x END) AS b FROM t")
    assert derive(value(out, "a"), value(out, "b"), sign=(2, -1)) is None
    out = c.query("SELECT SUM(x) AS a, AVG(x) AS m, STDDEV(x) AS sd, SUM(CASE WHEN old THEN 1 ELSE 0 END) AS k FROM t")
    assert value(out, "a") == pooled.x.sum() and value(out, "m") == pytest.approx(pooled.x.mean(), rel=1e-6)
    assert value(out, "sd") == pytest.approx(pooled.x.std(), rel=1e-4) and value(out, "k") == len(old)


def test_too_many_checked_differences_are_refused() -> None:
    """Each checked sum or difference is a local statement at every site: a query with more than
    MAX_CHECKS of them is refused with the reason, never checked less."""
    c = _consortium([_rows(s, "a", [1.0] * 6) for s in range(3)], (1, 70))
    sums = ", ".join(f"SUM(CASE WHEN x > {i} THEN x END) AS s{i}" for i in range(9))  # 9 sums, 36 pairs
    with pytest.raises(UnsupportedQuery, match="at most 32"):
        compile_query(f"SELECT {sums} FROM t", c.schema, c.rules, tuple(c.cons))


def test_margins_over_a_dominated_cell_are_withheld() -> None:
    """ROLLUP(g), (1, 60) with one dominated group: the margin is withheld with it, so
    ``(all) - b - c - d`` gives nothing; the other groups equal pandas."""
    frames = [
        pd.concat([_rows(0, "a", [500.0, 20, 20]), _rows(0, "b", [30.0, 40, 50])]),
        pd.concat([_rows(1, "a", [20.0, 20]), _rows(1, "b", [30.0, 40]), _rows(1, "c", [10.0] * 6)]),
        pd.concat([_rows(2, "a", [10.0]), _rows(2, "c", [12.0] * 3), _rows(2, "d", [1.0] * 6)]),
    ]
    assert _dominated(frames, 1, 60) == {"a": True, "b": False, "c": False, "d": False}
    out = _consortium(frames, (1, 60)).query("SELECT g, SUM(x) AS s FROM t GROUP BY ROLLUP(g)")
    got = dict(zip(out.g, out.s, strict=True))
    truth = pd.concat(frames).groupby("g").x.sum()
    assert got["a"] == "<5" and got["(all)"] == "<5"
    assert [got[g] for g in "bcd"] == [truth[g] for g in "bcd"]


def test_off_by_default_and_in_plan_and_explain() -> None:
    frames = [_rows(s, "a", [1.0, 2, 3, 4, 5]) for s in range(3)]
    c = _consortium(frames, None)
    text = "SELECT g, COUNT(*), SUM(x), AVG(x > 2) FROM t GROUP BY g"
    off = compile_query(text, c.schema, c.rules, tuple(c.cons))
    assert "dominance" not in off.data["params"] and "dominance" not in [s["op"] for s in off.data["steps"]]
    on_rules = dataclasses.replace(c.rules, dominance=(2, 80))
    plan = compile_query(text, c.schema, on_rules, tuple(c.cons))
    ops = [s["op"] for s in plan.data["steps"]]
    assert plan.data["params"]["dominance"] == [2, 80] and plan.digest() != off.digest()
    assert ops.index("dominance") < ops.index("suppress")
    step = plan.data["steps"][ops.index("dominance")]
    assert (step["n"], step["p"], len(step["items"])) == (2, 80, 1)  # the proportion reads no magnitude
    rows = plan.data["steps"][ops.index("suppress")]["rows"]
    assert [bool(r["flags"]) for r in rows] == [False, True, False]
    words = explain(plan)
    assert "dominance" in words and "2 largest persons make more than 80%" in words


def test_combine_policy_and_toml(tmp_path: Path) -> None:
    """Strictest wins: the largest n with the smallest p (withholding whatever either site's rule
    would); the option round-trips through JSON and is read from policy.toml or refused."""
    a, b, off = Policy("a", dominance=(1, 90)), Policy("b", dominance=(3, 95)), Policy("c")
    both = combine([a, b, off])
    assert both.dominance == (3, 90)
    assert combine([off]).dominance is None
    assert Policy.from_json("x", both.to_json()).dominance == (3, 90)
    path = tmp_path / "policy.toml"
    template = render_policy_template("a")
    path.write_text(template)
    assert load_policy(path, "a").dominance is None
    path.write_text(template.replace("# dominance = [n, p]", "dominance = [2, 85]"))
    assert load_policy(path, "a").dominance == (2, 85)
    for bad in ("[0, 85]", "[2, 100]", "[2]", '["2", 85]', "2"):
        path.write_text(template.replace("# dominance = [n, p]", f"dominance = {bad}"))
        with pytest.raises(ConfigError, match="dominance"):
            load_policy(path, "a")


def test_a_combined_rule_withholds_what_each_site_would() -> None:
    """(1, 50) and (3, 80) combine to (3, 50): on random tables, every cell either site's rule
    calls dominated is dominated under the combination (pandas reference)."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        frames = [_rows(s, "a", list(rng.exponential(10, size=int(rng.integers(1, 6))))) for s in range(3)]
        either = _dominated(frames, 1, 50)["a"] or _dominated(frames, 3, 80)["a"]
        assert not either or _dominated(frames, 3, 50)["a"]


def test_site_top_against_pandas() -> None:
    """One site's inputs: persons whose rows span several cells add up within a margin before
    they are ranked; NaN or a total beyond the range marks the cell out of range (inputs 0)."""
    rng = np.random.default_rng(2)
    rows = 400
    base = rng.integers(0, 6, rows)
    out = np.stack([base, 6 + base // 3, np.full(rows, 8)], axis=1)  # cells, two margins, the total
    person = rng.integers(0, 60, rows)
    values = rng.normal(0, 50, rows)
    top, total, over = site_top(out, person, values, 9, 3)
    frame = pd.DataFrame({"person": np.repeat(person, 3), "cell": out.reshape(-1), "v": np.repeat(values, 3)})
    per_person = frame.groupby(["cell", "person"]).v.sum().abs()
    for cell, mags in per_person.groupby(level="cell"):
        want = np.sort(mags.to_numpy())[::-1][:3]
        assert np.allclose(top[cell, : want.size], want) and total[cell] == pytest.approx(mags.sum())
    assert not over.any()
    values[0] = np.nan
    values[1] = CAP
    top, total, over = site_top(out, person, values, 9, 3)
    hit = set(out[0]) | set(out[1])
    assert set(np.flatnonzero(over)) == hit and not top[list(hit)].any() and not total[list(hit)].any()


def test_splits_are_every_choice_of_n() -> None:
    for n, sites in ((1, 3), (3, 3), (4, 2), (2, 5)):
        got = {tuple(r) for r in splits(n, sites).tolist()}
        want = {c for c in product(range(n + 1), repeat=sites) if sum(c) == n}
        assert got == want and len(got) == len(splits(n, sites))


def test_gather_below_follows_containment() -> None:
    """Each output cell collects the cells whose labels agree with it wherever it has a key."""
    cells = Cells.of((2, 3, 2), [(0, 1, 2), (0, 1), (0, 2), (0,), (1,), ()])
    labels = cells.labels()
    rng = np.random.default_rng(1)
    v = rng.integers(0, 5, size=cells.out).astype(np.uint64)
    got = cells.gather_below(np.stack([v, np.zeros_like(v)]))[0]
    for i, lab in enumerate(labels):
        inside = [
            j for j, other in enumerate(labels) if all(a is None or a == b for a, b in zip(lab, other, strict=True))
        ]
        assert got[i] == v[inside].sum(), lab


# -- through three real agents ---------------------------------------------------------------

def test_attacker_cannot_estimate_a_dominant_value(declared: Running) -> None:
    """The attacker subtracts (n - 1) typical values from the men's total. On the pooled data
    that estimate is within 10% of the planted value, so a released total would give it away;
    every form of it (SUM, AVG times the count, an offset sum, the ROLLUP margin minus the
    women) is withheld, while the women's values answer exactly."""
    pooled = declared.pooled
    men, women = pooled[pooled.sex == 1].meal_cal.dropna(), pooled[pooled.sex == 2].meal_cal.dropna()
    assert abs(men.sum() - (len(men) - 1) * women.mean() - PLANTED) < 0.1 * PLANTED  # the attack works in the clear
    client = declared.client
    typical = value(client.query("SELECT AVG(meal_cal) AS m FROM lung WHERE sex = 2"), "m")
    assert typical == pytest.approx(women.mean(), rel=1e-6)
    out = client.query(
        "SELECT COUNT(meal_cal) AS n, SUM(meal_cal) AS s, AVG(meal_cal) AS m, SUM(meal_cal + 100000) AS o "
        "FROM lung WHERE sex = 1"
    )
    n = value(out, "n")
    assert n == len(men)
    assert derive(value(out, "s"), -(n - 1) * typical) is None
    assert value(out, "m") is None
    assert derive(value(out, "o"), -100000 * n, -(n - 1) * typical) is None
    table = client.query("SELECT sex, COUNT(meal_cal) AS n, SUM(meal_cal) AS s FROM lung GROUP BY ROLLUP(sex)")
    rows = {str(k): i for i, k in enumerate(table.sex)}
    assert derive(value(table, "s", rows["(all)"]), value(table, "s", rows["2"]), sign=(1, -1)) is None
    assert value(table, "s", rows["2"]) == pytest.approx(women.sum(), rel=1e-9)


def test_undominated_queries_answer_exactly(declared: Running) -> None:
    """Legitimate sums nobody dominates equal pandas on the pooled data under the same rule."""
    pooled = declared.pooled
    out = declared.client.query(
        "SELECT sex, status, COUNT(*) AS n, SUM(time) AS t, AVG(age) AS a, STDDEV(wt_loss) AS w "
        "FROM lung GROUP BY sex, status"
    )
    for (sex, status), grp in pooled.groupby(["sex", "status"]):
        row = out[(out.sex == sex) & (out.status == status)]
        assert row.n.item() == len(grp)
        assert row.t.item() == pytest.approx(grp.time.sum(), rel=1e-9)
        assert row.a.item() == pytest.approx(grp.age.mean(), rel=1e-6)
        assert row.w.item() == pytest.approx(grp.wt_loss.std(), rel=1e-4)


def test_per_site_breakdown_without_person_column() -> None:
    """A table without a person column (each row a person) under CUBE(SITE, g): the one dominated
    site cell and the margins holding it are withheld, every other cell equals pandas."""
    rng = np.random.default_rng(5)
    frames = []
    for s in range(3):
        x = rng.integers(10, 20, 30).astype(float)
        if s == 1:
            x[0] = 5000.0
        frames.append({"t": pd.DataFrame({"g": np.repeat(["a", "b", "c"], 10), "x": x})})
    tables = {f"site{s}": f for s, f in enumerate(frames)}
    schema = schema_from_duckdb(_connections({"p": tables["site0"]})["p"], domains={"t.g": ["a", "b", "c"]})
    c = Consortium(tables, schema, DisclosureRules(dominance=(1, 50), statement_kinds=None))
    out = c.query("SELECT SITE, g, SUM(x) AS s FROM t GROUP BY CUBE(SITE, g)")
    pooled = pd.concat([f["t"].assign(site=name) for name, f in tables.items()])
    withheld = {("site1", "a"), ("site1", "(all)"), ("(all)", "a"), ("(all)", "(all)")}
    for site, g, got in zip(out.site, out.g, out.s, strict=True):
        rows = pooled[((pooled.site == site) | (site == "(all)")) & ((pooled.g == g) | (g == "(all)"))]
        assert (got == "<5") if (site, g) in withheld else got == rows.x.sum(), (site, g, got)
