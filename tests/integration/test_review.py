"""Issue 10, item 5: output review by the DPOs of two sites, end to end with real agents.

north and central say ``[privacy] review = "dpo"``, south does not. A query's result is held
as shares at all three members; the analyst hears "pending review at site central, north".
Approved at north it is still pending; approved at central too, ``Consortium.pending()``
fetches it, and it equals pandas on the pooled rows. Denied at one site, nothing is released
and every member deletes its shares. Each step is an audit entry; the DPO's ``review show``
prints names and shapes, never a value.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import Consortium, ResultPending, ReviewOutcome
from site_agent.agent import messages as msg
from site_agent.net.framing import OUTSIDER
from site_agent.review.store import Held, ReviewStore

from .conftest import SITES, Running, start_retrying
from .test_happy_path import agent_cli

REVIEWERS = ["central", "north"]
DPO = {"privacy": {"review": '"dpo"'}}
T = TypeVar("T")


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_retrying(tmp_path_factory.mktemp("review"), {"north": DPO, "central": DPO})
    yield running
    running.close()


def _eventually(probe: Callable[[], T], ok: Callable[[T], bool], seconds: float = 15.0) -> T:
    """``probe()`` until ``ok`` holds (decisions reach the other members within a second or two)."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def _review(running: Running, site: str, *args: str) -> str:
    done = agent_cli("review", *args, "--config", str(running.agent_toml(site)))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _band(size: int) -> str:
    """The band a DPO sees for a cell of ``size`` persons (docs/review-and-report.md)."""
    bounds = [(0, 9), (10, 19), (20, 49), (50, 99), (100, 199), (200, 499), (500, 999)]
    return next((f"{lo}-{hi}" for lo, hi in bounds if lo <= size <= hi), "1000+")


def _held_files(running: Running, site: str, query_id: str) -> list[Path]:
    return sorted((running.audit_path(site).parent / "review").glob(f"{query_id}.*"))


def _actions(running: Running, site: str, query_id: str) -> list[str]:
    return [e["review"]["action"] for e in running.audit(site) if e.get("review", {}).get("id") == query_id]


def test_held_until_both_reviewing_sites_approve_then_equal_to_pandas(reviewed: Running) -> None:
    query = "SELECT sex, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY sex"
    with pytest.raises(ResultPending) as pending:
        reviewed.client.query(query)
    assert pending.value.sites == REVIEWERS
    assert str(pending.value).startswith("pending review at site central, north (id ")
    query_id = pending.value.query_id
    for site in SITES:
        held = reviewed.audit(site)[-1]
        assert held["review"] == {"id": query_id, "action": "held", "sites": REVIEWERS}
        assert held["reveals"] == [] and held["decision"] == "accepted"
        assert [p.suffix for p in _held_files(reviewed, site, query_id)] == [".json", ".npy"]

    # The DPO sees the query, the plan and the outputs' names and shapes, never a value.
    listing = _review(reviewed, "north", "list")
    assert query_id[:16] in listing and "waiting for central, north" in listing
    shown = _review(reviewed, "north", "show", query_id[:12])
    assert query in shown and "n:n_rows 3, mean_age:a1_mean 3" in shown and "Output review:" in shown
    ref = reviewed.pooled.groupby("sex").age.mean()
    assert not any(f"{v:.4f}"[:6] in shown for v in ref), "a value reached the DPO's screen"
    # Each cell's size as a band, computed on shares; here from the pooled rows (persons: ids).
    persons = reviewed.pooled.groupby("sex").id.nunique()
    for sex, label in ((1, "1"), (2, "2")):
        assert f"    {label}: {_band(int(persons[sex]))}\n" in shown, shown
    assert "    (other): 0-9\n" in shown

    assert reviewed.client.pending().waiting == {query_id: REVIEWERS}

    assert "still waiting for central" in _review(reviewed, "north", "approve", query_id[:16])
    after_one = _eventually(reviewed.client.pending, lambda o: o.waiting == {query_id: ["central"]})
    assert after_one.waiting == {query_id: ["central"]} and not after_one.released

    assert "every reviewing site approved" in _review(reviewed, "central", "approve", query_id[:16])
    outcome: ReviewOutcome = _eventually(reviewed.client.pending, lambda o: bool(o.released))
    assert len(outcome.released) == 1 and not outcome.waiting and not outcome.discarded
    got = outcome.released[0].set_index("sex").sort_index()
    pooled = reviewed.pooled.groupby("sex")
    assert got["n"].tolist() == pooled.size().tolist()
    np.testing.assert_allclose(got["mean_age"], pooled.age.mean(), rtol=1e-6)
    assert outcome.released[0].attrs["query"] == query
    assert sorted(r["site"] for r in outcome.released[0].attrs["receipts"]) == sorted(SITES)

    # Each step is an audit entry; each member released once and deleted its shares.
    for site in SITES:
        decided = ["approved"] if site in REVIEWERS else []
        assert _actions(reviewed, site, query_id) == ["held", *decided, "released"]
        released = reviewed.audit(site)[-1]
        assert [r["name"] for r in released["reveals"]][-2:] == ["n:n_rows", "mean_age:a1_mean"]
        # the shares stay until the client's confirmation of receipt arrives, then go
        files = _eventually(lambda s=site: _held_files(reviewed, s, query_id), lambda f: len(f) == 1)
        assert [p.suffix for p in files] == [".json"]
    again = reviewed.client.pending()
    assert not again.released and query_id not in again.waiting


def test_denied_at_one_site_releases_nothing(reviewed: Running) -> None:
    with pytest.raises(ResultPending) as pending:
        reviewed.client.query("SELECT status, COUNT(*) AS n FROM lung GROUP BY status")
    query_id = pending.value.query_id
    assert "approved" in _review(reviewed, "north", "approve", query_id[:16])
    assert "nothing is released" in _review(reviewed, "central", "deny", query_id[:16])
    outcome = _eventually(reviewed.client.pending, lambda o: query_id in o.discarded)
    assert outcome.discarded == {query_id: "denied at site central"}
    assert not outcome.released and not outcome.waiting
    for site in SITES:
        _eventually(lambda s=site: _actions(reviewed, s, query_id), lambda a: a[-1] == "discarded")
        decided = {"north": ["approved"], "central": ["denied"], "south": []}[site]
        assert _actions(reviewed, site, query_id) == ["held", *decided, "discarded"]
        assert [p.suffix for p in _held_files(reviewed, site, query_id)] == [".json"]
        record: dict[str, Any] = json.loads(_held_files(reviewed, site, query_id)[0].read_text())
        assert record["state"] == "denied"
    later = agent_cli("review", "approve", query_id[:16], "--config", str(reviewed.agent_toml("central")))
    assert later.returncode == 1 and "already denied" in later.stdout


def test_a_member_down_during_the_decisions_keeps_its_shares_and_learns_them(reviewed: Running) -> None:
    """south crashes after holding; both DPOs approve meanwhile; south restarts from its disk,
    hears the decisions when its links come up, and the result is released whole."""
    with pytest.raises(ResultPending) as pending:
        reviewed.client.query("SELECT COUNT(*) AS n FROM lung")
    query_id = pending.value.query_id
    reviewed.procs.kill("south")
    for site in REVIEWERS:
        _review(reviewed, site, "approve", query_id[:16])
    reviewed.procs.restart("south")
    outcome = _eventually(reviewed.client.pending, lambda o: bool(o.released), seconds=30)
    assert [frame["n"].tolist() for frame in outcome.released] == [[len(reviewed.pooled)]]
    assert _actions(reviewed, "south", query_id) == ["held", "released"]


def test_explain_names_the_review(reviewed: Running) -> None:
    text = reviewed.client.explain("SELECT COUNT(*) AS n FROM lung")
    assert "held as shares at every member until the data-protection officers of central, north approve" in text


def test_the_report_shows_the_reviews(reviewed: Running) -> None:
    since = pd.Timestamp.now("UTC").normalize() - pd.Timedelta(days=1)
    done = agent_cli(
        "report", "--config", str(reviewed.agent_toml("north")), "--since", since.date().isoformat(), "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    actions = [(r["action"], r["analyst"]) for r in report["reviews"]]
    raw = [e for e in reviewed.audit("north") if "review" in e]
    assert actions == [(e["review"]["action"], e["analyst"]) for e in raw if e["review"]["action"] != "held"]
    assert {a for a, _ in actions} == {"approved", "released", "discarded"}
    held = sum(1 for e in raw if e["review"]["action"] == "held")
    assert held == 3 and sum(r["held"] for r in report["requests"]) == held  # the three tests above
    released = [o for o in report["outputs"] if o["seq"] in {e["seq"] for e in raw}]
    assert len(released) == 2  # the approved results, listed with the outputs that left


def _held_state(running: Running, site: str, query_id: str) -> str:
    held = ReviewStore(running.audit_path(site).parent / "review").get(query_id)
    return "" if held is None else held.state


def _approved_everywhere(running: Running, query: str) -> str:
    """Ask ``query``, approve it at both reviewing sites, wait until every member knows; its id."""
    with pytest.raises(ResultPending) as pending:
        running.client.query(query)
    query_id = pending.value.query_id
    for site in REVIEWERS:
        _review(running, site, "approve", query_id[:16])
    for site in SITES:
        _eventually(lambda s=site: _held_state(running, s, query_id), lambda state: state == "approved")
    return query_id


def test_a_fetch_cut_off_is_repeated_and_releases_the_same_values(
    reviewed: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10, item 5: the analyst's connection closes right after asking for an approved
    result, then a client that reconstructs it crashes before confirming receipt. Each member
    kept its shares: the next fetch gets the same values, with the same receipts, and every
    member wrote one ``released`` entry; only the confirmation deletes the shares."""
    query = "SELECT sex, COUNT(*) AS n, AVG(time) AS mean_time FROM lung GROUP BY sex"
    query_id = _approved_everywhere(reviewed, query)

    cut = Consortium.connect(reviewed.config, "analyst")

    async def ask_then_hang_up() -> None:
        fetch = msg.control(msg.REVIEW_FETCH, OUTSIDER, query_ids=[query_id])
        for index in range(3):
            await cut._send(index, fetch)
        await cut._close()

    cut._run(ask_then_hang_up())
    cut.close()

    async def crash_before_confirming(self: Consortium, query_ids: list[str]) -> None:
        return None

    monkeypatch.setattr(Consortium, "_confirm", crash_before_confirming)
    crashed = Consortium.connect(reviewed.config, "analyst")
    try:
        (first,) = crashed.pending().released
    finally:
        crashed.close()
    monkeypatch.undo()
    for site in SITES:
        assert _held_state(reviewed, site, query_id) == "approved"
        assert [p.suffix for p in _held_files(reviewed, site, query_id)] == [".json", ".npy"]

    (again,) = reviewed.client.pending().released
    pooled = reviewed.pooled.groupby("sex")
    for frame in (first, again):
        got = frame.set_index("sex").sort_index()
        assert got["n"].tolist() == pooled.size().tolist()
        np.testing.assert_allclose(got["mean_time"], pooled.time.mean(), rtol=1e-6)
    pd.testing.assert_frame_equal(first, again)
    def by_site(frame: pd.DataFrame) -> list[dict[str, Any]]:
        return sorted(frame.attrs["receipts"], key=lambda r: r["site"])

    assert by_site(first) == by_site(again)  # the same audit entries: one release, sent twice
    for site in SITES:
        _eventually(lambda s=site: _held_state(reviewed, s, query_id), lambda state: state == "released")
        assert [p.suffix for p in _held_files(reviewed, site, query_id)] == [".json"]
        assert _actions(reviewed, site, query_id).count("released") == 1
    assert not reviewed.client.pending().released


def test_an_approved_result_never_fetched_is_discarded_after_its_retention(reviewed: Running) -> None:
    """Issue 10, item 5: an approved result whose receipt is not confirmed ``review_keep_hours``
    after the last approval is deleted at every member, with an ``expired`` entry, and the
    analyst hears so. The clock hook: the approvals' times in each member's record, moved back
    past the retention (the same edit at every member, as decision times travel with decisions)."""
    query_id = _approved_everywhere(reviewed, "SELECT COUNT(*) AS n FROM lung WHERE age > 60")
    for site in SITES:
        store = ReviewStore(reviewed.audit_path(site).parent / "review")

        def long_ago(held: Held) -> bool:
            for decision in held.decisions.values():
                decision.time -= held.keep_hours * 3600.0
            return True

        store.update(query_id, long_ago)
    for site in SITES:
        actions = _eventually(lambda s=site: _actions(reviewed, s, query_id), lambda a: a[-1:] == ["expired"])
        assert "released" not in actions and actions[-1] == "expired"
        assert "not fetched before" in reviewed.audit(site)[-1]["reason"]
        assert [p.suffix for p in _held_files(reviewed, site, query_id)] == [".json"]
    outcome = reviewed.client.pending()
    assert not outcome.released and outcome.discarded[query_id].startswith("expired: approved, but not fetched before")
