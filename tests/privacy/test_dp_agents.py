"""DP mode through three real agents (TLS, DuckDB, separate processes) on the lung data.

The sites' ``[privacy]`` rules differ on purpose, so the strictest must win and refusals must
name the site: south caps one query at epsilon 0.5, central has the smallest budget (3.0) and
answers in DP mode only; north allows both modes. The tests run in order: budgets are spent
as they go, and the last one spends the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import QueryFailed
from site_agent.query.plan import Plan

from ..integration.conftest import SITES, Dataset, Running, start_retrying
from ..lung import LUNG_SCHEMA, lung_by_site
from .test_dp_mode import DP_SCHEMA, T

PRIVACY = {
    "north": 'mode = "both"\nepsilon_per_query = 1.0\nepsilon = 8.0\n',
    "central": 'mode = "dp"\nepsilon_per_query = 1.0\nepsilon = 3.0\n',
    "south": 'mode = "both"\nepsilon_per_query = 0.5\nepsilon = 10.0\n',
}
COUNTS = "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex"


def _privacy_sections(folder: Path) -> None:
    for site, text in PRIVACY.items():
        with (folder / "sites" / site / "policy.toml").open("a") as f:
            f.write(f"\n[privacy]\n{text}")


@pytest.fixture(scope="module")
def dp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    assert DP_SCHEMA != LUNG_SCHEMA
    running = start_retrying(
        tmp_path_factory.mktemp("dp-agents"), {}, None, Dataset("lung", DP_SCHEMA, lung_by_site), _privacy_sections
    )
    yield running
    running.close()


def test_a_dp_query_is_the_pooled_count_plus_noise_at_the_strictest_epsilon(dp: Running) -> None:
    """No epsilon asked: the strictest site's cap (south, 0.5) is used; it is in the plan every
    site agreed on (the audit entries' plan digest), and each site records it with the budget."""
    before = dp.audit_counts()
    out = dp.client.query(COUNTS, dp=True).set_index("sex")
    truth = dp.pooled.groupby("sex").size()
    sd = out.attrs["noise_scale"]["n"]
    assert out.attrs["epsilon"] == 0.5 and out.attrs["dp"]["delta"] == 1e-5
    for sex in (1, 2):
        assert abs(out.loc[sex, "n"] - truth[sex]) < 6 * sd
        assert out.loc[sex, "n_ci_low"] == pytest.approx(out.loc[sex, "n"] - 1.959963984540054 * sd)
    digest = Plan(out.attrs["plan"]).digest()
    assert out.attrs["plan"]["params"]["dp"]["epsilon"] == 0.5
    for site in SITES:
        (entry,) = dp.wait_audit(site, before[site])
        assert entry["decision"] == "accepted" and entry["plan_digest"] == digest
        assert entry["privacy"]["epsilon"] == 0.5 and entry["privacy"]["budget"] == 3.0  # central's, strictest
        assert entry["privacy"]["charged"] == "yes"
        assert entry["privacy"]["spent"] == pytest.approx(0.5, abs=1e-6)


def test_an_epsilon_above_a_sites_cap_is_refused_naming_that_site(dp: Running) -> None:
    spent = dp.client.budget()["spent"]
    with pytest.raises(QueryFailed) as err:
        dp.client.query(COUNTS, epsilon=1.0)
    assert (err.value.site, err.value.rule) == ("south", "epsilon_per_query")
    assert "at most 0.5 per query" in str(err.value)
    pd.testing.assert_series_equal(dp.client.budget()["spent"], spent)  # nothing charged


def test_an_exact_query_is_refused_where_a_site_answers_in_dp_mode_only(dp: Running) -> None:
    with pytest.raises(QueryFailed) as err:
        dp.client.query(COUNTS)
    assert (err.value.site, err.value.rule) == ("central", "mode")


def test_the_differencing_attack_with_real_agents_gets_noise(dp: Running) -> None:
    """Three rounds of ``WHERE sex = 1`` minus ``WHERE sex = 1 AND NOT (T)``: the estimate of the
    target's presence (1) errs by the difference of two released noises, whose spread the
    results declare; the in-process test (test_dp_mode.py) checks the distribution over 200."""
    errors = []
    for _ in range(3):
        a = dp.client.query("SELECT COUNT(*) AS n FROM lung WHERE sex = 1", epsilon=0.5)
        b = dp.client.query(f"SELECT COUNT(*) AS n FROM lung WHERE sex = 1 AND NOT ({T})", epsilon=0.5)
        errors.append(int(a["n"][0]) - int(b["n"][0]) - 1)
        spread = math.sqrt(2) * a.attrs["noise_scale"]["n"]
    assert all(abs(e) < 6 * spread for e in errors)
    assert spread > 5  # a difference of 1 person is far inside the noise


def test_budget_shows_spent_and_remaining_per_site_and_survives_restarts(dp: Running) -> None:
    """``%mpc budget``: every site reports the same spent epsilon (RDP composition of the 7
    queries so far: below their sum, above one query's) and its own remaining budget; after
    central restarts (SIGTERM) and south is killed and restarted, the accounts are the same and
    the sites still agree on them."""
    budget = dp.client.budget()
    assert list(budget.index) == list(SITES)
    assert budget["queries"].tolist() == [7, 7, 7]
    spent = budget["spent"].to_numpy()
    assert np.allclose(spent, spent[0]) and 0.5 < spent[0] < 7 * 0.5
    assert budget["remaining"].to_numpy() == pytest.approx([8.0 - spent[0], 3.0 - spent[0], 10.0 - spent[0]])
    dp.procs.restart("central")
    dp.procs.kill("south")
    dp.procs.restart("south")
    again = dp.client.budget()
    pd.testing.assert_frame_equal(again, budget)
    out = dp.client.query(COUNTS, dp=True)  # the restarted members agree on the account
    assert out.attrs["epsilon"] == 0.5
    assert (dp.client.budget()["queries"] == 8).all()


def test_an_over_budget_query_is_refused_by_every_site(dp: Running) -> None:
    """Spend central's budget of 3.0 (the strictest) with queries at 0.5: RDP composition lets
    24 run in all (basic composition would stop at 6); the next is refused at every site,
    naming central and the rule ``epsilon``, and is not charged."""
    ran = int(dp.client.budget()["queries"].iloc[0])
    with pytest.raises(QueryFailed) as err:
        for _ in range(40):
            dp.client.query(COUNTS, dp=True)
            ran += 1
    assert (err.value.site, err.value.rule) == ("central", "epsilon")
    assert "privacy budget is spent" in str(err.value)
    assert 20 <= ran <= 30
    budget = dp.client.budget()
    assert (budget["queries"] == ran).all() and budget.loc["central", "spent"] <= 3.0
    for site in SITES:
        last = dp.audit(site)[-1]
        assert last["decision"] == "refused", last
        assert "'central' refused (epsilon): the privacy budget is spent" in last["reason"]
        assert last["privacy"]["charged"] == "no" and last["privacy"]["epsilon"] == 0.5
