"""Issue 10, item 5: results that fail automatic release go to the DPOs (``review = "failing"``),
end to end with real agents.

north and central say ``[privacy] review = "failing"``, south ``"auto"``. A grouped query whose
release rule withholds a small cell is held as shares at every member ("pending review at site
central, north"); the DPOs' ``review show`` marks the withheld cells with their sizes as bands,
never values; approved by both, the analyst gets every cell as computed, equal to pandas on the
pooled rows; denied, nothing. A query without a withheld cell goes straight to the analyst. A
tracker (a pair difference of one person) stays withheld after approval.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import ResultPending

from .conftest import SITES, Running, start_retrying
from .test_review import _actions, _band, _eventually, _held_files, _review

FAILING = {"privacy": {"review": '"failing"'}}
REVIEWERS = ["central", "north"]
K = 5


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_retrying(tmp_path_factory.mktemp("review_failing"), {"north": FAILING, "central": FAILING})
    yield running
    running.close()


def _held(running: Running, query: str) -> str:
    with pytest.raises(ResultPending) as pending:
        running.client.query(query)
    assert pending.value.sites == REVIEWERS
    return pending.value.query_id


def test_a_result_without_withheld_cells_goes_straight_to_the_analyst(failing: Running) -> None:
    before = {s: len(failing.audit(s)) for s in SITES}
    got = failing.client.query("SELECT sex, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY sex")
    pooled = failing.pooled.groupby("sex")
    got = got.set_index("sex").sort_index()
    assert got["n"].tolist() == pooled.size().tolist()
    np.testing.assert_allclose(got["mean_age"], pooled.age.mean(), rtol=1e-6)
    for site in SITES:
        (entry,) = failing.audit(site)[before[site] :]
        assert "review" not in entry and entry["decision"] == "accepted"


def test_a_small_cell_is_held_shown_as_bands_and_approval_releases_it_as_computed(failing: Running) -> None:
    query = "SELECT ph_ecog, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY ph_ecog"
    query_id = _held(failing, query)
    pooled = failing.pooled
    by_ecog = pooled.groupby(pooled.ph_ecog.fillna(-1))
    small = [v for v, n in by_ecog.size().items() if n < K]
    assert 3 in small  # one patient with ph_ecog 3: auto would show "<5"

    shown = _review(failing, "north", "show", query_id[:12])
    assert "the release rule passes" in shown and "approving releases" in shown
    assert "    3: released if approved\n" in shown, shown
    assert "    3: 0-9\n" in shown and "    1: 100-199\n" in shown
    assert f"    0: {_band(int(by_ecog.id.nunique()[0]))}\n" in shown
    for value in by_ecog.age.mean():
        assert f"{value:.4f}"[:6] not in shown, "a value reached the DPO's screen"
    assert "Output review of withheld cells" in shown

    _review(failing, "north", "approve", query_id[:16])
    after_one = _eventually(failing.client.pending, lambda o: o.waiting == {query_id: ["central"]})
    assert after_one.waiting == {query_id: ["central"]} and not after_one.released
    _review(failing, "central", "approve", query_id[:16])
    outcome = _eventually(failing.client.pending, lambda o: bool(o.released))
    (frame,) = outcome.released
    got = frame.set_index("ph_ecog")
    for value, group in pooled.dropna(subset=["ph_ecog"]).groupby("ph_ecog"):
        assert got.loc[int(value), "n"] == len(group)  # the single patient's cell too
        np.testing.assert_allclose(got.loc[int(value), "mean_age"], group.age.mean(), rtol=1e-6)
    for site in SITES:
        decided = ["approved"] if site in REVIEWERS else []
        assert _actions(failing, site, query_id) == ["held", *decided, "released"]


def test_a_denied_result_releases_nothing(failing: Running) -> None:
    query_id = _held(failing, "SELECT ph_ecog, COUNT(*) AS n FROM lung WHERE age > 50 GROUP BY ph_ecog")
    _review(failing, "central", "deny", query_id[:16])
    outcome = _eventually(failing.client.pending, lambda o: query_id in o.discarded)
    assert outcome.discarded[query_id] == "denied at site central" and not outcome.released
    for site in SITES:
        _eventually(lambda s=site: _actions(failing, s, query_id), lambda a: a[-1:] == ["discarded"])
        assert [p.suffix for p in _held_files(failing, site, query_id)] == [".json"]


def test_attacker_a_tracker_stays_withheld_after_approval_and_pending_says_one_bit(failing: Running) -> None:
    """The attacker's arithmetic: ``total - rest`` is the target's survival time when ``rest``
    leaves out one patient (T: 74 years old, institution 12, a man), and ``alone`` is it outright.
    The pair difference of one person withholds ``rest`` among men, the branch of one person
    ``alone``; approval releases only cells of fewer than k persons, and men are many, so after
    approval both are still withheld there: neither ``total - rest`` nor ``alone`` can be read.
    Before, the analyst learned that some cell was withheld (the result is pending), which the
    release rule alone would have shown with the cell marked; the pending answer and the
    analyst's list carry no flags, bands or values."""
    target = "age = 74 AND inst = 12"
    query = (
        "SELECT sex, SUM(time) AS total, SUM(CASE WHEN NOT (" + target + ") THEN time END) AS rest, "
        "SUM(CASE WHEN " + target + " THEN time END) AS alone FROM lung GROUP BY sex"
    )
    with pytest.raises(ResultPending) as pending:
        failing.client.query(query)
    query_id = pending.value.query_id
    assert set(vars(pending.value)) <= {"query_id", "sites", "deadline", "args"}
    listed = failing.client.pending()
    assert listed.waiting == {query_id: REVIEWERS} and not listed.released

    shown = _review(failing, "north", "show", query_id[:12])
    assert "    1: stays withheld\n" in shown  # the DPO sees that approval leaves the tracker out
    for site in REVIEWERS:
        _review(failing, site, "approve", query_id[:16])
    (frame,) = _eventually(failing.client.pending, lambda o: bool(o.released)).released
    got = frame.set_index("sex")
    pooled = failing.pooled
    totals = pooled.groupby("sex").time.sum()
    assert got.loc[1, "total"] == totals[1] and got.loc[2, "total"] == totals[2]
    assert got.loc[1, "rest"] == f"<{K}"  # T's cell: the difference of one person stays withheld
    assert got.loc[1, "alone"] == f"<{K}"  # and so does the branch of one person
    assert frame.attrs["suppressed"]["rest"][list(got.index).index(1)]
    target_time = int(pooled[(pooled.age == 74) & (pooled.inst == 12) & (pooled.sex == 1)].time.iloc[0])
    rest_2 = pooled[(pooled.sex == 2) & ~((pooled.age == 74) & (pooled.inst == 12))].time.sum()
    assert got.loc[2, "rest"] == rest_2  # no target among women: released, and nothing to learn
    released = {v for v in got.to_numpy().ravel() if isinstance(v, (int, float, np.number))}
    assert all(abs(a - b) != target_time for a in released for b in released)
    assert isinstance(frame, pd.DataFrame)
