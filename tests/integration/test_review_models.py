"""Issue 10, item 5: models and KAPLAN_MEIER held for output review, end to end with real agents.

north and central say ``[privacy] review = "dpo"`` (the policy of test_review.py's consortium,
started here once more for this module). A LINEAR fit is held as shares at every member; the
DPO's ``review show`` has the terms' names and the sizes as bands and no number of the fit;
approved at both sites it equals statsmodels on the pooled rows, denied nothing leaves. A
KAPLAN_MEIER held and approved equals lifelines. A model its own rules refuse is refused, never
held; a held model counts as opened in the release ledger.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
import statsmodels.formula.api as smf

from mpc_jupyter.client import QueryFailed, ResultPending

from ..lung import SITES
from ..models.conftest import relative
from ..models.km_reference import check_group, check_logrank
from .conftest import Running, start_retrying
from .test_review import DPO, REVIEWERS, _actions, _band, _eventually, _held_files, _review

LINEAR = "LINEAR wt_loss ~ age + C(sex) + ph_karno FROM lung"
KM = "KAPLAN_MEIER time, status = 2 BY sex FROM lung AT 0 TO 1100 STEP 1"


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_retrying(tmp_path_factory.mktemp("review-models"), {"north": DPO, "central": DPO})
    yield running
    running.close()


def _held(running: Running, query: str) -> str:
    """Ask ``query``; it must be held for review at central and north: its id."""
    with pytest.raises(ResultPending) as pending:
        running.client.query(query)
    assert pending.value.sites == REVIEWERS
    return pending.value.query_id


def _released(running: Running, query: str) -> pd.DataFrame:
    """The analyst's released result of ``query``, once every member knows both approvals."""
    outcome = _eventually(running.client.pending, lambda o: any(f.attrs["query"] == query for f in o.released))
    (frame,) = [f for f in outcome.released if f.attrs["query"] == query]
    return frame


def _numbers(value: float) -> list[str]:
    """Ways a float could be printed (so none of them may appear on the DPO's screen)."""
    return [f"{value:.4f}", f"{value:.3g}", repr(value)[:7]]


def test_linear_held_shown_as_bands_then_equal_to_statsmodels(reviewed: Running) -> None:
    pooled = reviewed.pooled
    ref = smf.ols("wt_loss ~ age + C(sex) + ph_karno", pooled).fit()
    query_id = _held(reviewed, LINEAR)
    for site in SITES:
        held = reviewed.audit(site)[-1]
        assert held["review"] == {"id": query_id, "action": "held", "sites": REVIEWERS}
        assert held["reveals"] == [] and held["kind"] == "model"
        assert [p.suffix for p in _held_files(reviewed, site, query_id)] == [".json", ".npy"]

    shown = _review(reviewed, "north", "show", query_id[:12])
    assert LINEAR in shown and "terms     Intercept, age, C(sex)[T.2], ph_karno" in shown
    assert "outputs   coef 4, se 4, n 1" in shown and "(names and sizes; values are never shown)" in shown
    complete = pooled.dropna(subset=["wt_loss", "age", "sex", "ph_karno"])
    assert f"    persons: {_band(complete.id.nunique())}\n" in shown
    assert "[committee] bands:" in shown and "until the data-protection officers of central, north" in shown
    for value in [*ref.params, *ref.bse, ref.rsquared]:  # no number of the fit reaches the DPO
        for text in _numbers(float(value)):
            assert text not in shown, text

    assert "still waiting for central" in _review(reviewed, "north", "approve", query_id[:16])
    # north's decision reaches the other members over the mesh: central decides after it has it
    _eventually(reviewed.client.pending, lambda o: o.waiting.get(query_id) == ["central"])
    assert "every reviewing site approved" in _review(reviewed, "central", "approve", query_id[:16])
    ours = _released(reviewed, LINEAR)
    assert relative(ours["coef"], ref.params) < 1e-8
    assert relative(ours["std err"], ref.bse) < 1e-8
    assert ours.attrs["n"] == ref.nobs and ours.attrs["r_squared"] == pytest.approx(ref.rsquared, rel=1e-6)
    for site in SITES:
        decided = ["approved"] if site in REVIEWERS else []
        assert _actions(reviewed, site, query_id) == ["held", *decided, "released"]
        assert {r["name"] for r in reviewed.audit(site)[-1]["reveals"]} >= {"coef", "se", "bands"}


def test_a_denied_model_releases_nothing(reviewed: Running) -> None:
    query_id = _held(reviewed, "LOGISTIC status = 2 ~ age + C(sex) FROM lung")
    shown = _review(reviewed, "central", "show", query_id[:16])
    dead = reviewed.pooled.dropna(subset=["age", "sex"]).status.eq(2).sum()
    assert f"    events: {_band(int(dead))}\n" in shown
    assert "nothing is released" in _review(reviewed, "north", "deny", query_id[:16])
    outcome = _eventually(reviewed.client.pending, lambda o: query_id in o.discarded)
    assert outcome.discarded[query_id] == "denied at site north"
    assert all(f.attrs["query"] != "LOGISTIC status = 2 ~ age + C(sex) FROM lung" for f in outcome.released)
    for site in SITES:
        _eventually(lambda s=site: _actions(reviewed, s, query_id), lambda a: a[-1:] == ["discarded"])
        assert [p.suffix for p in _held_files(reviewed, site, query_id)] == [".json"]


def test_kaplan_meier_held_then_equal_to_lifelines(reviewed: Running) -> None:
    query_id = _held(reviewed, KM)
    shown = _review(reviewed, "north", "show", query_id[:16])
    assert "step table: " in shown and " released steps x (time, at_risk" in shown
    assert "km_at_risk " in shown and "(names and sizes; values are never shown)" in shown
    pooled = reviewed.pooled
    for sex in (1, 2):  # each group's persons at risk at the start, as a band
        assert f"    {sex}: {_band(int((pooled.sex == sex).sum()))}\n" in shown
    for site in REVIEWERS:
        _review(reviewed, site, "approve", query_id[:16])
    out = _released(reviewed, KM)
    for sex in (1, 2):
        rows = pooled[pooled.sex == sex]
        check_group(out, rows, rows.status == 2, out.attrs["min_cell_size"], sex=sex)
    check_logrank(out, pooled, pooled.status == 2, pooled.sex)


def test_a_model_its_rules_refuse_is_refused_not_held(reviewed: Running) -> None:
    """ph_ecog = 3 is one patient: min_cell_size refuses before anything is opened or held."""
    before = reviewed.audit_counts()
    with pytest.raises(QueryFailed) as err:
        reviewed.second.query("LINEAR wt_loss ~ age + C(ph_ecog) FROM lung")  # no earlier fit in its ledger
    assert err.value.rule == "min_cell_size"
    for site in SITES:
        entry = reviewed.wait_audit(site, before[site])[-1]
        assert entry["decision"] == "refused" and "review" not in entry and entry["reveals"] == []


def test_a_held_model_counts_as_opened_in_the_ledger(reviewed: Running) -> None:
    """Held, never approved: a second model whose rows differ from the held one's by the few
    patients of one age is refused (ledger_difference), as after a release."""
    pooled = reviewed.pooled
    ages = pooled.age.value_counts()
    age = int(ages[(ages >= 1) & (ages <= 4)].index.min())  # most patients are older
    _held(reviewed, f"LINEAR wt_loss ~ ph_karno FROM lung WHERE age >= {age}")
    with pytest.raises(QueryFailed) as err:
        reviewed.client.query(f"LINEAR wt_loss ~ ph_karno FROM lung WHERE age > {age}")
    assert err.value.rule == "ledger_difference"
