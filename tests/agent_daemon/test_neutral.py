"""A neutral committee member (``data = false``) as the daemon sets it up: empty tables from the
consortium schema, no SITE slice, no table rules, and the same plan digest at every member."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpc_jupyter.demo.consortium import SiteSpec, TableSpec, build_consortium
from site_agent.agent import planning
from site_agent.agent.data import columns_of
from site_agent.agent.service import Agent
from site_agent.cli.agent import main as agent_cli
from site_agent.config import load_agent, load_consortium
from site_agent.errors import ConfigError
from site_agent.policy import Policy, combine

from ..lung import LUNG_SCHEMA, lung_by_site

COMMITTEE = ("east", "neutral", "west")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    frames = lung_by_site()
    specs = []
    for site in COMMITTEE:
        if site == "neutral":
            specs.append(SiteSpec(site, {}, data=False, min_cell_size=9))
            continue
        csv = tmp_path / f"{site}.csv"
        frames["north" if site == "east" else "south"].to_csv(csv, index=False)
        specs.append(SiteSpec(site, {"lung": TableSpec(csv, identifiers=["id"])}))
    return build_consortium(tmp_path / "consortium", specs, LUNG_SCHEMA)


def _agent(config: Path, site: str) -> Agent:
    return Agent(load_agent(config.parent / "sites" / site / "agent.toml"), load_consortium(config))


def test_members_agree_on_the_plan_and_the_neutral_member_has_no_slice(config: Path) -> None:
    agents = {site: _agent(config, site) for site in COMMITTEE}
    try:
        neutral = agents["neutral"]
        assert neutral.sites == ("east", "west") and neutral.site_index is None and not neutral.holds_data
        assert agents["west"].site_index == 1 and agents["west"].index == 2
        assert neutral.policy.tables is None
        assert set(columns_of(neutral.db.cursor())["lung"]) == set(neutral.schema.tables["lung"].columns)
        text = "SELECT SITE, sex, COUNT(*) AS n, AVG(age) AS a FROM lung GROUP BY SITE, sex"
        digests = set()
        locals_ = {}
        for site, agent in agents.items():
            # What each member builds from its own policy and its peers' (as exchanged on the wire).
            peers = [Policy.from_json(p, agents[p].policy.to_json()) for p in COMMITTEE if p != site]
            policy = combine([agent.policy, *peers])
            assert policy.min_cell_size == 9
            plan = planning.compile_query(text, agent.schema, policy, {}, agent.sites)
            assert plan.plan.keys[0]["domain"] == ["east", "west"]
            digests.add(plan.digest)
            local = plan.local_inputs(agent.db.cursor(), site, agent.site_index, agent.holds_data)
            assert local.size == plan.input_size
            locals_[site] = local
        assert len(digests) == 1
        # The neutral member's inputs are the fill values (zero counts): it adds nothing.
        plan = planning.compile_query(
            text, neutral.schema, combine(a.policy for a in agents.values()), {}, neutral.sites
        )
        count = plan.input_names[0]
        assert plan.plan.data["inputs"][0]["fill"] == 0 and plan.input_shape(count) == (plan.plan.base_cells,)
        assert not locals_["neutral"][: plan.plan.base_cells].any() and locals_["east"][: plan.plan.base_cells].any()
    finally:
        for agent in agents.values():
            agent.db.close()
            agent.audit.close()


def test_a_neutral_member_declaring_tables_refuses_to_start(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config.parent / "sites" / "neutral" / "agent.toml"
    csv = config.parent.parent / "east.csv"
    code = agent_cli(["check", "--config", str(path), "--offline"])
    out = capsys.readouterr().out
    assert code == 0 and "no data (a neutral compute member" in out
    path.write_text(path.read_text() + f'\n[tables.lung]\npath = "{csv}"\n')
    with pytest.raises(ConfigError) as info:
        _agent(config, "neutral")
    assert "site 'neutral' holds no data" in str(info.value) and "remove its [tables] sections" in str(info.value)
    assert agent_cli(["check", "--config", str(path), "--offline"]) == 1
    assert "FAIL  data: the site holds no data" in capsys.readouterr().out
