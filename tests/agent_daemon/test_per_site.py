"""Per-site breakdowns through the daemon: the plan's statement kind is checked against every
site's policy, the committee order is the domain of SITE, and over the network (three real
agents, TLS, DuckDB) a per-site query equals pandas grouped by the hospital that holds each row."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import Consortium, QueryFailed
from mpc_jupyter.demo.consortium import AgentProcesses, SiteSpec, TableSpec, build_consortium
from site_agent.agent import planning
from site_agent.errors import PolicyRefusal
from site_agent.policy import Policy, combine
from site_agent.policy.model import TablePolicy
from site_agent.query.schema_file import load_schema_file

from ..lung import LUNG_SCHEMA, SITES, lung_by_site

TEXT = (
    "SELECT SITE AS hospital, sex, COUNT(*) AS n, AVG(age) AS mean_age, STDDEV(time) AS sd_time "
    "FROM lung GROUP BY ROLLUP(hospital, sex)"
)


def _policy(site: str, kinds: set[str]) -> Policy:
    return Policy(site, tables={"lung": TablePolicy(None, frozenset({"id"}))}, statement_kinds=frozenset(kinds))


def test_daemon_checks_the_plans_kind_against_every_site(tmp_path: Path) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(LUNG_SCHEMA)
    schema = load_schema_file(path)
    allowing = combine(_policy(s, {"aggregate", "per_site_breakdown"}) for s in SITES)
    plan = planning.compile_query(TEXT, schema, allowing, {}, SITES)
    assert plan.kind == "per_site_breakdown"
    assert plan.plan.keys[0]["domain"] == list(SITES)
    assert planning.compile_query(TEXT, schema, allowing, {}, SITES).digest == plan.digest
    plain = planning.compile_query("SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex", schema, allowing, {}, SITES)
    assert plain.kind == "aggregate"
    refusing = combine(
        _policy(s, {"aggregate"} if s == "central" else {"aggregate", "per_site_breakdown"}) for s in SITES
    )
    with pytest.raises(PolicyRefusal) as err:
        planning.compile_query(TEXT, schema, refusing, {}, SITES)
    assert (err.value.site, err.value.rule) == ("central", "statement_kinds")
    only_breakdowns = combine(_policy(s, {"per_site_breakdown"} if s == "south" else {"aggregate"}) for s in SITES)
    with pytest.raises(PolicyRefusal) as err:
        planning.compile_query("SELECT COUNT(*) AS n FROM lung", schema, only_breakdowns, {}, SITES)
    assert (err.value.site, err.value.rule) == ("south", "statement_kinds")


# --- three real agents ------------------------------------------------------------------------


def _start(root: Path, frames: dict[str, pd.DataFrame], refusing: str | None) -> tuple[Path, AgentProcesses]:
    (root / "data").mkdir(parents=True)
    specs = []
    for site, df in frames.items():
        csv = root / "data" / f"{site}.csv"
        df.to_csv(csv, index=False)
        kinds = ("aggregate", "model") if site == refusing else ("aggregate", "per_site_breakdown", "model")
        specs.append(SiteSpec(site, {"lung": TableSpec(csv, identifiers=["id"])}, statement_kinds=kinds))
    config = build_consortium(root / "consortium", specs, LUNG_SCHEMA)
    return config, AgentProcesses(config.parent, list(SITES)).start()


@pytest.fixture(scope="module")
def consortia(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, pd.DataFrame]]]:
    """Two consortia started in parallel: every site allows per-site breakdowns, or central does not."""
    root = tmp_path_factory.mktemp("per_site")
    frames = lung_by_site()
    with ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(_start, root / name, frames, refusing)
            for name, refusing in (("open", None), ("closed", "central"))
        }
        started, errors = {}, []
        for name, fut in futures.items():
            try:
                started[name] = fut.result()
            except Exception as exc:  # stop whatever did start before failing
                errors.append(f"{name}: {exc}")
    if errors:
        for _, procs in started.values():
            procs.stop()
        pytest.fail("consortia did not start: " + "; ".join(errors))
    pooled = pd.concat([df.assign(hospital=site) for site, df in frames.items()], ignore_index=True)
    yield {name: (config, pooled) for name, (config, _) in started.items()}
    for _, procs in started.values():
        procs.stop()


def test_per_site_query_over_the_network_equals_pandas(consortia: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    config, pooled = consortia["open"]
    client = Consortium.connect(config, "analyst")
    try:
        out = client.query(TEXT)
    finally:
        client.close()
    got = out.set_index(["hospital", "sex"])
    assert list(dict.fromkeys(out.hospital)) == [*SITES, "(all)"]
    for (hospital, sex), grp in pooled.groupby(["hospital", "sex"]):
        row = got.loc[(hospital, sex)]
        if row["n"] == "<5":  # the empty (other) sex cell protects nothing: its line keeps two suppressed
            continue
        assert row["n"] == len(grp)
        np.testing.assert_allclose(row["mean_age"], grp.age.mean(), rtol=1e-6)
        np.testing.assert_allclose(row["sd_time"], grp.time.std(), rtol=1e-6)
    for hospital, grp in pooled.groupby("hospital"):
        assert got.loc[(hospital, "(all)"), "n"] == len(grp)
        np.testing.assert_allclose(got.loc[(hospital, "(all)"), "mean_age"], grp.age.mean(), rtol=1e-6)
    total = got.loc[("(all)", "(all)")]
    assert total["n"] == len(pooled)
    np.testing.assert_allclose(total["sd_time"], pooled.time.std(), rtol=1e-6)


def test_a_site_that_forbids_per_site_breakdowns_refuses_by_name(
    consortia: dict[str, tuple[Path, pd.DataFrame]],
) -> None:
    config, pooled = consortia["closed"]
    client = Consortium.connect(config, "analyst")
    try:
        with pytest.raises(QueryFailed) as err:
            client.query(TEXT)
        assert (err.value.site, err.value.category, err.value.rule) == ("central", "policy", "statement_kinds")
        assert "per_site_breakdown" in str(err.value)
        out = client.query("SELECT COUNT(*) AS n FROM lung")  # pooled aggregates still run
        assert out["n"].tolist() == [len(pooled)]
    finally:
        client.close()
