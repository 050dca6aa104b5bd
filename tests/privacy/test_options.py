"""Optional release options of site policy (docs/privacy.md, "Options per site policy"), run in
process against pandas on the pooled data: redaction at or below N, rounding of released counts
to base 5, and how two sites' policies combine (the strictest wins)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from site_agent.errors import ConfigError
from site_agent.policy.model import Policy, combine, load_policy, render_policy_template
from site_agent.privacy.rounding import round_to_base
from site_agent.query import DisclosureRules, compile_query, explain, schema_from_duckdb
from site_agent.query.plan import COUNT_BITS

from ..integration.conftest import start_retrying
from ..mpc.helpers import run_open, shared
from ..query.conftest import Consortium, _connections

GROUPS = list(range(8))


def _frames(sizes: dict[int, tuple[int, int, int]]) -> dict[str, dict[str, pd.DataFrame]]:
    """Three sites; group g holds sizes[g][s] persons at site s."""
    frames = {}
    for s in range(3):
        g = [grp for grp, per_site in sizes.items() for _ in range(per_site[s])]
        frames[f"site{s}"] = {"t": pd.DataFrame({"pid": [f"s{s}-{i}" for i in range(len(g))], "g": g})}
    return frames


def _consortium(sizes: dict[int, tuple[int, int, int]], rules: DisclosureRules) -> Consortium:
    frames = _frames(sizes)
    con = _connections({"probe": frames["site0"]})["probe"]
    schema = schema_from_duckdb(con, domains={"t.g": GROUPS}, persons={"t": "pid"})
    return Consortium(frames, schema, rules)


def _released(result: pd.DataFrame, column: str) -> dict[int, object]:
    return dict(zip(result["g"], result[column], strict=True))


# group -> persons per site; totals 0, 3, 5, 6, 7, 8, 9, 20
SIZES = {0: (0, 0, 0), 1: (1, 1, 1), 2: (2, 2, 1), 3: (2, 2, 2), 4: (3, 2, 2), 5: (3, 3, 2), 6: (3, 3, 3), 7: (7, 7, 6)}


@pytest.mark.parametrize("redact", [0, 6, 7])
def test_redaction_boundary(redact: int) -> None:
    """With k = 5 and redact_at_or_below = N, counts 1..max(4, N) are withheld, N + 1 and above
    released exactly, 0 released as 0."""
    c = _consortium(SIZES, DisclosureRules(min_cell_size=5, redact_at_or_below=redact))
    got = _released(c.query("SELECT g, COUNT(*) AS n, AVG(g) AS m FROM t GROUP BY g"), "n")
    truth = c.pooled["t"].groupby("g").size().reindex(GROUPS, fill_value=0)
    cut = max(5, redact + 1)
    for g, n in truth.items():
        if n == 0 or n >= cut:
            assert got[g] == n, (g, n)
        else:
            assert got[g] == f"<{cut}", (g, n)
    assert sum(isinstance(v, str) for v in got.values()) == int(((truth > 0) & (truth < cut)).sum())


def test_redaction_in_plan_and_explain() -> None:
    """The option enters the plan (so its digest covers it) and --explain names it."""
    c = _consortium(SIZES, DisclosureRules(min_cell_size=5, redact_at_or_below=7))
    plan = compile_query("SELECT g, COUNT(*) FROM t GROUP BY g", c.schema, c.rules, tuple(c.cons))
    off = dataclasses.replace(c.rules, redact_at_or_below=0)
    plain = compile_query("SELECT g, COUNT(*) FROM t GROUP BY g", c.schema, off, tuple(c.cons))
    assert plan.data["params"]["redact_at_or_below"] == 7
    assert plan.data["params"]["min_cell_size"] == 8
    assert plan.digest() != plain.digest()
    assert "redact_at_or_below" in explain(plan)


def test_rounding_in_plan_and_explain() -> None:
    """Rounding is a declared plan step; the count's reveal point says it opens the rounded
    value, and nothing declares the exact count as opened."""
    c = _consortium(SIZES, DisclosureRules(min_cell_size=5, round_counts=5))
    plan = compile_query("SELECT g, COUNT(*) AS n, AVG(g) AS m FROM t GROUP BY g", c.schema, c.rules, tuple(c.cons))
    assert plan.data["params"]["round_counts"] == 5
    rounding = [s["items"] for s in plan.data["steps"] if s["op"] == "round"]
    assert rounding == [[{"out": "n_rows_round5", "in": "n_rows"}]]
    count = next(r for r in plan.data["reveals"] if r["name"].startswith("n:"))
    assert count["value"] == "n_rows_round5" and count["what"].endswith("rounded to base 5")
    assert "round_counts" in explain(plan) and "round " in explain(plan)


def test_combine_strictest_wins() -> None:
    a = Policy("a", min_cell_size=10, redact_at_or_below=3, round_counts=5)
    b = Policy("b", min_cell_size=5, redact_at_or_below=7, min_sites=2)
    c = Policy("c", round_counts=2)
    both = combine([a, b])
    assert (both.min_cell_size, both.redact_at_or_below, both.round_counts, both.min_sites) == (10, 7, 5, 2)
    assert combine([a, b, c]).round_counts == 10  # a multiple of every site's base
    assert combine([b]).round_counts == 0
    back = Policy.from_json("x", both.to_json())
    assert (back.redact_at_or_below, back.round_counts, back.min_sites) == (7, 5, 2)


def test_policy_toml_options(tmp_path: Path) -> None:
    """The template parses with the option off; a set option is read, a negative one refused."""
    path = tmp_path / "policy.toml"
    path.write_text(render_policy_template("a"))
    assert load_policy(path, "a").redact_at_or_below == 0
    path.write_text(render_policy_template("a").replace("redact_at_or_below = 0", "redact_at_or_below = 7"))
    assert load_policy(path, "a").redact_at_or_below == 7
    path.write_text(render_policy_template("a").replace("redact_at_or_below = 0", "redact_at_or_below = -1"))
    with pytest.raises(ConfigError, match="redact_at_or_below"):
        load_policy(path, "a")
    path.write_text(render_policy_template("a").replace("min_sites = 1", "min_sites = 2"))
    assert load_policy(path, "a").min_sites == 2
    path.write_text(render_policy_template("a").replace("min_sites = 1", "min_sites = 0"))
    with pytest.raises(ConfigError, match="min_sites"):
        load_policy(path, "a")
    for base, ok in ((5, True), (1, False), (-5, False)):
        path.write_text(render_policy_template("a").replace("round_counts = 0", f"round_counts = {base}"))
        if ok:
            assert load_policy(path, "a").round_counts == base
        else:
            with pytest.raises(ConfigError, match="round_counts"):
                load_policy(path, "a")


def _half_up(n: np.ndarray, base: int) -> np.ndarray:
    """Round half up to a multiple of base, in plain integers (the reference)."""
    return (np.floor(n / base + 0.5) * base).astype(np.int64)


def test_round_to_base_exact_near_the_bound() -> None:
    """Exact for every residue and at the top of the count range (below 2^24), for bases 2..10."""
    top = (1 << COUNT_BITS) - 1
    x = np.concatenate([np.arange(0, 40), np.arange(top - 40, top + 1), [1 << 20, 12_345_678]])
    shares = shared(x)
    for base in (2, 3, 4, 5, 7, 10):
        got = run_open(lambda p, b=base: round_to_base(p, shares[p.index], b, COUNT_BITS)).view(np.int64)
        np.testing.assert_array_equal(got, _half_up(x, base), err_msg=f"base {base}")


def _table(draw: st.DrawFn) -> dict[int, tuple[int, int, int]]:
    size = st.integers(0, 9)
    return {g: (draw(size), draw(size), draw(size)) for g in GROUPS}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.composite(_table)())
def test_rounded_counts_match_pandas(sizes: dict[int, tuple[int, int, int]]) -> None:
    """Every released count (cells and the ROLLUP margin) equals pandas' count rounded half up
    to base 5; none is the exact count unless that is a multiple of 5. Margins are rounded on
    their own."""
    c = _consortium(sizes, DisclosureRules(min_cell_size=3, round_counts=5))
    result = c.query("SELECT g, COUNT(*) AS n, COUNT(DISTINCT pid) AS d FROM t GROUP BY ROLLUP(g)")
    pooled = c.pooled["t"]
    truth = pooled.groupby("g").size().reindex(GROUPS, fill_value=0)
    expected = {**truth.to_dict(), "(all)": len(pooled)}
    released = 0
    for col in ("n", "d"):
        for g, v in zip(result["g"], result[col], strict=True):
            if isinstance(v, str):  # withheld by the release rule (k = 3)
                assert v == "<3"
                continue
            released += 1
            assert v == _half_up(np.array([expected[g]]), 5)[0], (col, g, v, expected[g])
            assert v % 5 == 0
    assert released > 0


# group -> persons per site: 6 at one site only; 3 + 3 at two sites; 2 + 2 + 2; 10 at one site
SPREAD = {1: (6, 0, 0), 2: (3, 3, 0), 3: (2, 2, 2), 4: (0, 0, 10)}


@pytest.mark.parametrize("min_sites", [1, 2, 3])
def test_min_sites(min_sites: int) -> None:
    """A cell is released only where at least min_sites sites have rows (pandas counts the sites);
    the ROLLUP margin counts the sites with rows anywhere; empty cells stay 0."""
    c = _consortium(SPREAD, DisclosureRules(min_cell_size=5, min_sites=min_sites))
    got = _released(c.query("SELECT g, COUNT(*) AS n, AVG(g) AS m FROM t GROUP BY ROLLUP(g)"), "n")
    frames = _frames(SPREAD)
    counts = {g: sum(int((f["t"]["g"] == g).sum()) for f in frames.values()) for g in GROUPS}
    sites = {g: sum(bool((f["t"]["g"] == g).any()) for f in frames.values()) for g in GROUPS}
    counts["(all)"], sites["(all)"] = sum(counts.values()), 3
    for g, n in counts.items():
        if n == 0:
            assert got[g] == 0
        elif sites[g] >= min_sites:
            assert got[g] == n, (g, n)
        else:
            assert got[g] == "<5", (g, n, sites[g])
    if min_sites == 2:  # the one-site cells are 1 (6 persons) and 4 (10 persons): the rest is released
        assert [g for g, v in got.items() if v == "<5"] == [1, 4]


def test_min_sites_in_plan_and_explain() -> None:
    """The too-few-sites flag is computed in a declared step and stops every release row."""
    c = _consortium(SPREAD, DisclosureRules(min_cell_size=5, min_sites=2))
    plan = compile_query("SELECT g, COUNT(*), AVG(g) FROM t GROUP BY g", c.schema, c.rules, tuple(c.cons))
    assert plan.data["params"]["min_sites"] == 2
    assert [s["op"] for s in plan.data["steps"]].index("sites") < [s["op"] for s in plan.data["steps"]].index(
        "suppress"
    )
    release = next(s for s in plan.data["steps"] if s["op"] == "suppress")
    assert all("few_sites" in row["flags"] for row in release["rows"])
    assert "min_sites" in explain(plan)


def test_options_through_real_agents(tmp_path: Path) -> None:
    """Three real agents on the lung data; north's policy.toml rounds to 5 and redacts at or
    below 7, central's asks for two sites per cell: the combined options apply to every query.
    The attacker's arithmetic: a count of north's patients alone (WHERE inst <= 5) is withheld,
    and released counts are never the exact ones unless those are multiples of 5."""
    policies = {
        "north": {"extra_policy": {"round_counts": "5", "redact_at_or_below": "7"}},
        "central": {"extra_policy": {"min_sites": "2"}},
    }
    running = start_retrying(tmp_path / "options", policies)
    try:
        pooled = running.pooled
        out = running.client.query("SELECT sex, status, COUNT(*) AS n FROM lung GROUP BY sex, status")
        for (sex, status), grp in pooled.groupby(["sex", "status"]):
            got = out[(out.sex == sex) & (out.status == status)].n.item()
            assert got == _half_up(np.array([len(grp)]), 5)[0], (sex, status, got, len(grp))
        assert (out.n.astype(int) != [len(g) for _, g in pooled.groupby(["sex", "status"])]).any()
        north = running.client.query("SELECT sex, COUNT(*) AS n FROM lung WHERE inst <= 5 GROUP BY sex")
        assert set(north.n) == {"<8"}  # north's patients alone: one site
        two = running.client.query("SELECT sex, COUNT(*) AS n FROM lung WHERE inst <= 13 GROUP BY sex")
        for sex, grp in pooled[pooled.inst <= 13].groupby("sex"):
            assert two[two.sex == sex].n.item() == _half_up(np.array([len(grp)]), 5)[0]
    finally:
        running.close()
