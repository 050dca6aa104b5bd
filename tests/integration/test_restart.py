"""One agent restarts while the other two keep running (an upgrade, a crash, systemd's
Restart=on-failure): the links come back on their own (the lower-index member re-dials), the
policies are exchanged again on every link-up, and queries work again within seconds.

The tests share the ``restartable`` consortium and run in order: north is restarted with
SIGTERM; south is killed (kill -9), queried while down, and started again; central comes back
with a stricter policy, which the next query uses.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import QueryFailed, SiteUnavailable

from .conftest import FAULT_TIMEOUT, Running

QUERY = "SELECT sex, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY sex"
CELLS = "SELECT sex, ph_ecog, COUNT(*) AS n FROM lung WHERE ph_ecog IS NOT NULL GROUP BY sex, ph_ecog"
STRICTER = 30
BACK_WITHIN = 30.0
"""Seconds from starting an agent again until a query is answered: a liveness bound, several
times the few seconds an agent takes to come up on two shared cores."""


def assert_matches_pandas(out: pd.DataFrame, pooled: pd.DataFrame) -> None:
    got = out.set_index("sex")
    for sex, grp in pooled.groupby("sex"):
        assert got.loc[sex, "n"] == len(grp)
        np.testing.assert_allclose(got.loc[sex, "mean_age"], grp.age.mean(), rtol=1e-6)


def events(running: Running, site: str, event: str, peer: str) -> int:
    return sum(1 for r in running.procs.log_records(site) if r.get("event") == event and r.get("peer") == peer)


def test_restarted_agent_serves_again_within_seconds(restartable: Running) -> None:
    assert_matches_pandas(restartable.client.query(QUERY), restartable.pooled)
    ups = {s: events(restartable, s, "link_up", "north") for s in ("central", "south")}
    t0 = time.monotonic()
    restartable.procs.procs["north"].send_signal(signal.SIGTERM)
    assert restartable.procs.procs["north"].wait(10) == 0, restartable.procs.log_tail("north")
    restartable.procs.restart("north")
    out = restartable.client.query(QUERY)
    seconds = time.monotonic() - t0
    assert_matches_pandas(out, restartable.pooled)
    assert seconds < BACK_WITHIN, f"{seconds:.1f} s from the restart to an answer"
    for site in ("central", "south"):  # the peers saw the link go and come back
        assert events(restartable, site, "link_lost", "north") >= 1
        assert events(restartable, site, "link_up", "north") == ups[site] + 1


def test_killed_agent_fails_queries_naming_it_until_it_is_back(restartable: Running) -> None:
    restartable.procs.kill("south")
    t0 = time.monotonic()
    with pytest.raises((QueryFailed, SiteUnavailable)) as err:
        restartable.client.query(QUERY)
    assert time.monotonic() - t0 < FAULT_TIMEOUT, "a query with a member down must fail before any timeout"
    assert err.value.site == "south" and "south" in str(err.value), err.value  # type: ignore[attr-defined]
    t0 = time.monotonic()
    restartable.procs.restart("south")  # re-dialed by north and central, both lower indices
    out = restartable.client.query(QUERY)
    seconds = time.monotonic() - t0
    assert_matches_pandas(out, restartable.pooled)
    assert seconds < BACK_WITHIN, f"{seconds:.1f} s from the restart to an answer"
    for site in ("north", "central"):
        assert events(restartable, site, "link_lost", "south") >= 1
        assert any(r.get("event") == "redial" and r.get("peer") == "south" for r in restartable.procs.log_records(site))


def test_restarted_peer_with_a_stricter_policy_is_used(restartable: Running) -> None:
    counts = restartable.pooled.dropna(subset=["ph_ecog"]).astype({"ph_ecog": int}).groupby(["sex", "ph_ecog"]).size()
    small = counts[(counts >= 5) & (counts < STRICTER)]
    assert len(small) > 0
    got = restartable.client.query(CELLS).set_index(["sex", "ph_ecog"])
    for key in small.index:
        assert got.loc[key, "n"] == counts.loc[key]
    policy = restartable.dir / "sites" / "central" / "policy.toml"
    text = policy.read_text()
    assert "min_cell_size = 5\n" in text
    policy.write_text(text.replace("min_cell_size = 5\n", f"min_cell_size = {STRICTER}\n"))
    seconds = restartable.procs.restart("central")
    got = restartable.client.query(CELLS).set_index(["sex", "ph_ecog"])
    for key in small.index:
        assert got.loc[key, "n"] == f"<{STRICTER}", (key, got.loc[key, "n"])
    big = counts[counts >= STRICTER]
    for key in big.index:
        assert got.loc[key, "n"] == big.loc[key]
    assert seconds < BACK_WITHIN
    changed = [r for r in restartable.procs.log_records("north") if r.get("event") == "policy"]
    assert changed and "changed" in str(changed[-1]["message"]), changed[-3:]
