"""Per-site breakdowns (``GROUP BY SITE``): each site's rows in its own cell, margins pooled,
disclosure control on the per-site cells, and only where every site's policy allows it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from site_agent.errors import ConfigError, PolicyRefusal, UnsupportedQuery
from site_agent.policy import Policy, combine
from site_agent.policy.model import TablePolicy
from site_agent.query import Column, Schema, Table, compile_query, local_preaggregates, rules_from_policy
from site_agent.query.schema_file import load_schema_file

from .conftest import Consortium, K
from .quantile_reference import coarsened_type7


def by_site(lung: Consortium) -> pd.DataFrame:
    """The pooled rows with the name of the site that holds each."""
    frames = [con.execute("SELECT * FROM lung").df().assign(site=name) for name, con in lung.cons.items()]
    return pd.concat(frames, ignore_index=True)


def released(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    mask = pd.DataFrame(frame.attrs["suppressed"]).any(axis=1).to_numpy()
    return frame[~mask].set_index(keys)


def test_per_site_counts_means_and_spread_equal_pandas(lung: Consortium) -> None:
    out = lung.query(
        "SELECT SITE, sex, COUNT(*) AS n, AVG(age) AS mean_age, STDDEV(time) AS sd_time, MEDIAN(age) AS median_age, "
        "PROPORTION(status = 1) AS died FROM lung GROUP BY SITE, sex"
    )
    # sex is never NULL here: each (other) cell is empty, suppressed and left out of the result
    assert out["site"].tolist() == ["site0", "site0", "site1", "site1", "site2", "site2"]
    rows = by_site(lung)
    ref = rows.groupby(["site", "sex"])
    got = out.set_index(["site", "sex"])
    for (site, sex), grp in ref:
        row = got.loc[(site, sex)]
        assert row["n"] == len(grp)
        np.testing.assert_allclose(row["mean_age"], grp.age.mean(), rtol=1e-6)
        np.testing.assert_allclose(row["sd_time"], grp.time.std(), rtol=1e-6)
        assert row["median_age"] == coarsened_type7(grp.age, 0.5, (0, 120, 1), K).value
        # a proportion's successes and failures are both query sets: each holds 0 or >= K
        deaths, others = int((grp.status == 1).sum()), int((grp.status != 1).sum())
        if all(c == 0 or c >= K for c in (deaths, others)):
            np.testing.assert_allclose(row["died"], deaths / len(grp), rtol=1e-6)
            low, high = proportion_confint(deaths, len(grp), method="wilson")
            np.testing.assert_allclose([row["died_ci_low"], row["died_ci_high"]], [low, high], atol=1e-6)
        else:
            assert row["died"] == row["died_ci_low"] == f"<{K}"


def test_site_alone_with_an_alias_and_group_by_alias(lung: Consortium) -> None:
    out = lung.query("SELECT SITE AS hospital, COUNT(*) AS n, SUM(time) AS t FROM lung GROUP BY hospital")
    rows = by_site(lung)
    assert out["hospital"].tolist() == list(lung.cons)
    assert out["n"].tolist() == rows.groupby("site").size().loc[list(lung.cons)].tolist()
    np.testing.assert_allclose(out["t"], rows.groupby("site").time.sum().loc[list(lung.cons)], rtol=1e-6)


def test_small_site_cell_is_suppressed(lung: Consortium) -> None:
    rows = by_site(lung)
    old = rows[rows.age >= 73].groupby("site").size()
    assert old["site2"] < K <= min(old["site0"], old["site1"])  # the data this test relies on
    out = lung.query("SELECT SITE, COUNT(*) AS n, AVG(time) AS mean_time FROM lung WHERE age >= 73 GROUP BY SITE")
    got = out.set_index("site")
    assert got.loc["site2", "n"] == f"<{K}" and got.loc["site2", "mean_time"] == f"<{K}"
    assert got.loc["site0", "n"] == old["site0"] and got.loc["site1", "n"] == old["site1"]


def test_rollup_over_site_total_equals_pooled_and_protects_the_small_site(lung: Consortium) -> None:
    rows = by_site(lung)
    out = lung.query(
        "SELECT SITE, COUNT(*) AS n, AVG(age) AS mean_age, VARIANCE(time) AS var_time FROM lung GROUP BY ROLLUP(SITE)"
    )
    got = out.set_index("site")
    assert got.index.tolist() == ["site0", "site1", "site2", "(all)"]
    pooled = lung.pooled["lung"]
    assert got.loc["(all)", "n"] == len(pooled)
    np.testing.assert_allclose(got.loc["(all)", "mean_age"], pooled.age.mean(), rtol=1e-6)
    np.testing.assert_allclose(got.loc["(all)", "var_time"], pooled.time.var(), rtol=1e-6)
    assert sum(got.loc[s, "n"] for s in lung.cons) == len(pooled)
    # One small site under a released total: secondary suppression hides the next smallest too.
    old = lung.query("SELECT SITE, COUNT(*) AS n FROM lung WHERE age >= 73 GROUP BY ROLLUP(SITE)").set_index("site")
    assert old.loc["(all)", "n"] == int((rows.age >= 73).sum())
    assert old.loc["site2", "n"] == f"<{K}" and old.loc["site0", "n"] == f"<{K}"  # site0 is the smaller one left
    assert old.loc["site1", "n"] == int(((rows.age >= 73) & (rows.site == "site1")).sum())


def test_cube_with_site_margins_equal_pandas(lung: Consortium) -> None:
    rows = by_site(lung)
    out = released(
        lung.query("SELECT status, SITE, COUNT(*) AS n FROM lung GROUP BY CUBE(status, SITE)"), ["status", "site"]
    )
    # Each (other) status cell is empty and suppressed; anyone may presume it empty, so it does not
    # protect a status cell of its line: two status cells per line go, the site margins stay.
    for (status, site), n in rows.groupby(["status", "site"]).size().items():
        if (status, site) in out.index:
            assert out.loc[(status, site), "n"] == n
    for site, n in rows.groupby("site").size().items():
        assert out.loc[("(all)", site), "n"] == n
    assert out.loc[("(all)", "(all)"), "n"] == len(rows)


def test_local_sql_is_the_same_everywhere_and_the_site_index_places_the_cells(lung: Consortium) -> None:
    text = "SELECT SITE, sex, COUNT(*) AS n FROM lung GROUP BY SITE, sex"
    sites = tuple(lung.cons)
    a = compile_query(text, lung.schema, lung.rules, sites)
    assert a.digest() == compile_query(text, lung.schema, dataclasses.replace(lung.rules), sites).digest()
    assert compile_query(text, lung.schema, lung.rules, sites[::-1]).digest() != a.digest()
    assert a.kind == "per_site_breakdown" and a.site_key == 0 and a.base_cells == 9 and a.local_cells == 3
    assert all("site" not in q["sql"].lower() for q in a.data["local"])
    assert a.keys[0] == {"name": "site", "sql": "site", "domain": list(sites), "site": True}
    plain = compile_query("SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex", lung.schema, lung.rules, sites)
    assert plain.kind == "aggregate" and plain.data["local"] == a.data["local"]
    for index, (name, con) in enumerate(lung.cons.items()):
        n = local_preaggregates(a, con, site_index=index)["n_rows"].reshape(3, 3).astype(np.int64)
        assert np.all(np.delete(n, index, axis=0) == 0)
        own = con.execute("SELECT sex, COUNT(*) FROM lung GROUP BY sex ORDER BY sex").fetchall()
        assert n[index].tolist() == [c for _, c in own] + [0]  # sex 1, 2, (other)
        assert np.array_equal(
            local_preaggregates(a, con, name)["n_rows"], local_preaggregates(a, con, site_index=index)["n_rows"]
        )


def test_site_without_site_names_and_misplaced_site_are_refused(lung: Consortium) -> None:
    sites = tuple(lung.cons)
    with pytest.raises(UnsupportedQuery, match="site names"):
        compile_query("SELECT SITE, COUNT(*) FROM lung GROUP BY SITE", lung.schema, lung.rules)
    for text in (
        "SELECT COUNT(*) FROM lung WHERE SITE = 'site0'",
        "SELECT SITE = 'site0' AS first, COUNT(*) FROM lung GROUP BY first",
        "SELECT COUNT(DISTINCT SITE) AS sites FROM lung",
        "SELECT CASE WHEN SITE = 'site0' THEN 'a' ELSE 'b' END AS g, COUNT(*) FROM lung GROUP BY g",
    ):
        with pytest.raises(UnsupportedQuery, match="SITE may only be a group key") as err:
            compile_query(text, lung.schema, lung.rules, sites)
        assert err.value.line == 1 and err.value.column is not None
    with pytest.raises(UnsupportedQuery, match="reserved"):
        compile_query("SELECT sex AS site, COUNT(*) FROM lung GROUP BY site", lung.schema, lung.rules, sites)
    with pytest.raises(ValueError, match="distinct"):
        compile_query("SELECT COUNT(*) FROM lung", lung.schema, lung.rules, ("a", "a", "b"))


def test_a_schema_cannot_define_a_site_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        Schema.of([Table.of("visits", [Column("id", "integer"), Column("Site", "text")])])
    path = tmp_path / "schema.toml"
    path.write_text('[tables.visits]\nid = "integer"\nsite = { type = "text", domain = ["a", "b"] }\n')
    with pytest.raises(ConfigError, match=r"tables\.visits.*reserved"):
        load_schema_file(path)


def _policies(lung: Consortium, refusing: str) -> Policy:
    lung_table = {"lung": TablePolicy(columns=None, identifiers=frozenset())}
    return combine(
        Policy(
            site,
            tables=lung_table,
            statement_kinds=frozenset({"aggregate"} if site == refusing else {"aggregate", "per_site_breakdown"}),
        )
        for site in lung.cons
    )


def test_policy_without_per_site_breakdown_at_one_site_refuses_naming_it(lung: Consortium) -> None:
    policy = _policies(lung, refusing="site1")
    rules = rules_from_policy(policy, lung.schema)
    sites = tuple(lung.cons)
    with pytest.raises(PolicyRefusal) as err:
        compile_query("SELECT SITE, COUNT(*) AS n FROM lung GROUP BY ROLLUP(SITE)", lung.schema, rules, sites)
    assert (err.value.site, err.value.rule) == ("site1", "statement_kinds")
    assert "per_site_breakdown" in str(err.value)
    plan = compile_query("SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex", lung.schema, rules, sites)
    assert plan.kind == "aggregate"  # plain pooled queries still run
