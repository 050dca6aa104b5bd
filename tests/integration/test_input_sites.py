"""Five data sites: the three committee members and two input-only sites, as real processes.

The lung data is split by institution over north, central and south (the compute committee)
and east and west, which hold data, run no protocol and need no inbound port: they dial the
members, share their pre-aggregates and keep their own audit log and release ledger. Answers
are compared with pandas on the pooled rows of all five; the attacks are written in the
attacker's arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from lifelines import CoxPHFitter

from mpc_jupyter.client import QueryFailed, SiteUnavailable
from site_agent.agent import messages as msg
from site_agent.config import load_consortium
from site_agent.errors import MpcError
from site_agent.net.framing import OUTSIDER, Frame, MsgType, encode_parts

from ..lung import lung_by_site
from ..models.conftest import relative
from ..query.quantile_reference import coarsened_type7
from .conftest import Dataset, Running, Wire, run, start_retrying
from .test_cox import GRIDDED
from .test_revocation import WATCH_BOUND, _approve, _cli, _latest_change, _logged, _wait

INPUT_SITES = ("east", "west")


def five_sites() -> dict[str, pd.DataFrame]:
    """The lung rows split by institution over five sites (60, 57, 43, 35 and 32 patients)."""
    lung = pd.concat(lung_by_site().values(), ignore_index=True)
    return {
        "north": lung[lung.inst <= 3],
        "central": lung[(lung.inst >= 4) & (lung.inst <= 11)],
        "south": lung[(lung.inst >= 12) & (lung.inst <= 13)],
        "east": lung[(lung.inst >= 14) & (lung.inst <= 21)],
        "west": lung[lung.inst > 21],
    }


FIVE = Dataset("lung", GRIDDED, five_sites)  # time on a grid: COX needs one


def _privacy(folder: Path) -> None:
    """DP mode allowed everywhere; east, an input-only site, has the smallest budget."""
    for site in FIVE.frames():
        budget = 1.2 if site == "east" else 10.0
        with (folder / "sites" / site / "policy.toml").open("a") as f:
            f.write(f'\n[privacy]\nmode = "both"\nepsilon_per_query = 1.0\nepsilon = {budget}\n')


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    policies = {
        "east": {"compute": False, "min_cell_size": 8},  # the strictest k of all five
        "west": {"compute": False},
    }
    running = start_retrying(tmp_path_factory.mktemp("input-sites"), policies, data=FIVE, customize=_privacy)
    try:
        yield running
    finally:
        running.close()


def test_the_consortium_file_has_two_input_only_sites(five: Running) -> None:
    cfg = load_consortium(five.config)
    assert cfg.input_sites == INPUT_SITES
    assert cfg.data_sites == ("north", "central", "south", "east", "west")
    for site in INPUT_SITES:  # they dial out only: nothing listens on their registered port
        assert "serving" in (five.dir / "logs" / f"{site}.log").read_text()


def test_grouped_statistics_equal_pandas_on_all_five_sites(five: Running) -> None:
    res = five.client.query(
        "SELECT sex, status, COUNT(*) AS n, AVG(age) AS mean_age, STDDEV(time) AS sd_time, MEDIAN(age) AS med "
        "FROM lung GROUP BY sex, status"
    )
    ref = five.pooled.groupby(["sex", "status"]).agg(
        n=("age", "size"), mean_age=("age", "mean"), sd_time=("time", "std")
    )
    assert len(ref) == 4 and ref["n"].min() >= 8  # every cell passes the strictest k
    for _, row in res.iterrows():
        want = ref.loc[(int(row["sex"]), int(row["status"]))]
        assert row["n"] == want["n"]
        assert row["mean_age"] == pytest.approx(want["mean_age"], abs=1e-4)
        assert row["sd_time"] == pytest.approx(want["sd_time"], rel=1e-4)
        # k persons share the median's bins (docs/privacy-quantiles.md); k = 8, east's
        grp = five.pooled[(five.pooled.sex == row["sex"]) & (five.pooled.status == row["status"])]
        assert row["med"] == coarsened_type7(grp.age, 0.5, (30, 90, 1), 8).value
    # Every site's signed receipt, the input-only sites' relayed by the members.
    assert {r["site"] for r in res.attrs["receipts"]} == {"north", "central", "south", *INPUT_SITES}
    # The input-only site's policy counted in strictest-wins: k = 8 everywhere.
    assert res.attrs["plan"]["params"]["min_cell_size"] == 8


def test_site_breakdown_has_a_slice_per_data_site(five: Running) -> None:
    res = five.client.query("SELECT SITE, COUNT(*) AS n FROM lung GROUP BY SITE")
    got = dict(zip(res["site"], res["n"], strict=True))
    assert got == {site: len(df) for site, df in five.frames.items()}


def test_each_input_site_audits_what_it_shared(five: Running) -> None:
    text = "SELECT COUNT(*) AS n FROM lung WHERE age > 60"
    before = {s: len(five.audit(s)) for s in INPUT_SITES}
    assert five.client.query(text)["n"].tolist() == [int((five.pooled.age > 60).sum())]
    for site in INPUT_SITES:
        entries = five.wait_audit(site, before[site])
        assert entries[-1]["query"] == text and entries[-1]["decision"] == "accepted"
        assert "inputs shared" in entries[-1]["reason"]
        assert [r["name"] for r in entries[-1]["reveals"]]  # the declared outputs, never values


def test_differencing_a_patient_of_an_input_site_derives_nothing(five: Running) -> None:
    """The release ledger holds at the input-only sites too: of two queries whose query sets differ
    by one patient of east, the second's values are withheld, so the attacker's difference of the
    two sums is not the patient's time; a difference of many patients is released, exact."""
    pooled, east = five.pooled, five.frames["east"]
    keys = east.groupby(["age", "sex", "inst"]).size()
    age, sex, inst = next(k for k, n in keys.items() if n == 1)
    target = east[(east.age == age) & (east.sex == sex) & (east.inst == inst)].iloc[0]
    first = five.client.query(f"SELECT COUNT(*) AS n, SUM(time) AS t FROM lung WHERE sex = {sex}")
    total = float(first["t"].iloc[0])
    assert total == pytest.approx(pooled[pooled.sex == sex].time.sum(), abs=1e-3)

    second = five.client.query(
        f"SELECT COUNT(*) AS n, SUM(time) AS t FROM lung WHERE sex = {sex} AND NOT (age = {age} AND inst = {inst})"
    )
    rest = pd.to_numeric(second["t"], errors="coerce").iloc[0]
    derived = total - rest  # NaN when withheld
    assert not np.isclose(derived, float(target["time"]), atol=0.5), "one patient's time was derived"
    assert np.isnan(rest)

    # Control: leaving out a whole institution of east (many patients) is released and exact.
    many = east[(east.sex == sex)].inst.value_counts().idxmax()
    third = five.client.query(f"SELECT SUM(time) AS t FROM lung WHERE sex = {sex} AND NOT (inst = {many})")
    want = pooled[(pooled.sex == sex) & (pooled.inst != many)].time.sum()
    assert float(third["t"].iloc[0]) == pytest.approx(want, abs=1e-3)


def test_dp_counts_with_input_sites_and_the_input_sites_budget(five: Running) -> None:
    """DP mode: the noise is the members' (the input sites add none), and east, an input-only
    site, keeps the analyst's budget like every site: after one query at epsilon 1 its 1.2 is
    too little for a second, which is refused naming east."""
    truth = five.pooled.groupby("sex").size()
    out = five.client.query("SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex", epsilon=1.0).set_index("sex")
    sd = out.attrs["noise_scale"]["n"]
    for sex in (1, 2):
        assert abs(out.loc[sex, "n"] - truth[sex]) < 6 * sd
    with pytest.raises(QueryFailed) as info:
        five.client.query("SELECT COUNT(*) AS n FROM lung", epsilon=1.0)
    assert "east" in str(info.value) and "budget" in str(info.value)
    charged = [e for e in five.audit("east") if (e.get("privacy") or {}).get("charged") == "yes"]
    assert len(charged) == 1 and charged[0]["privacy"]["epsilon"] == 1.0


def _input_message(site: str, seeds: list[str]) -> list[bytes]:
    body = {
        "kind": msg.INPUT,
        "site": site,
        "query_id": "00" * 32,
        "verdict": "accept",
        "digest": "",
        "ledger_digest": "",
        "category": "",
        "rule": "",
        "message": "",
        "receipt": None,
        "seeds": seeds,
        "words": 1,
        "step": -1,
    }
    header, payload = encode_parts(Frame(MsgType.CONTROL, sender=OUTSIDER, control=body))
    return [header, bytes(payload)]


def test_only_the_input_site_itself_may_send_its_inputs(five: Running) -> None:
    """An analyst's certificate cannot pass shares off as east's; east's own certificate with a
    malformed message is refused too; the member keeps serving and answers correctly."""
    analyst = Wire(five, five.analyst_tls())
    answer = run(analyst.exchange("north", _input_message("east", ["00" * 16, ""])))
    assert answer.error is not None and "may not send 'input' control messages" in answer.error
    east = Wire(five, five.site_tls("east"))
    answer = run(east.exchange("south", _input_message("east", ["00" * 3, ""])))
    assert answer.error is not None and "seed" in answer.error
    assert five.client.query("SELECT COUNT(*) AS n FROM lung")["n"].tolist() == [len(five.pooled)]


COMPLETE = "wt_loss IS NOT NULL AND ph_karno IS NOT NULL AND ph_ecog IS NOT NULL"
"""One WHERE for every model of this module: the release ledger compares a fit's complete cases
with the sets released before, so fits whose NULL-dropped rows differ by 1 to k-1 persons are
refused; on one common set of rows they are all answered (docs/models.md)."""


def test_models_take_every_data_site_equal_to_statsmodels(five: Running) -> None:
    """LINEAR and LOGISTIC over all five sites: the input-only sites answer each Newton step at the
    coefficients the committee opened; the fits equal statsmodels on the pooled rows."""
    rows = five.pooled.dropna(subset=["wt_loss", "ph_karno", "ph_ecog"])
    ours = five.client.query(f"LINEAR wt_loss ~ age + C(sex) + ph_karno FROM lung WHERE {COMPLETE}")
    ref = smf.ols("wt_loss ~ age + C(sex) + ph_karno", rows).fit()
    assert relative(ours["coef"], ref.params) < 1e-8
    assert relative(ours["std err"], ref.bse) < 1e-8
    assert ours.attrs["n"] == ref.nobs
    assert {r["site"] for r in ours.attrs["receipts"]} == {"north", "central", "south", *INPUT_SITES}

    ours = five.client.query(f"LOGISTIC status = 2 ~ age + C(sex) + ph_ecog FROM lung WHERE {COMPLETE}")
    frame = rows.assign(dead=lambda d: (d.status == 2) * 1.0)
    ref = smf.logit("dead ~ age + C(sex) + ph_ecog", frame).fit(disp=0, tol=1e-12)
    assert relative(ours["coef"], ref.params) < 1e-6
    assert relative(ours["std err"], ref.bse) < 1e-6


def test_cox_and_its_concordance_take_every_data_site_equal_to_lifelines(five: Running) -> None:
    ours = five.client.query(f"COX time, status = 2 ~ age + C(sex) FROM lung WHERE {COMPLETE}")
    pooled = five.pooled.dropna(subset=["wt_loss", "ph_karno", "ph_ecog"])
    rows = pooled[["time", "age"]].assign(dead=(pooled.status == 2) * 1, female=(pooled.sex == 2) * 1)
    ref = CoxPHFitter().fit(rows, "time", "dead", fit_options={"precision": 1e-12})
    names = {"female": "C(sex)[T.2]"}
    assert relative(ours["coef"], ref.params_.rename(names)) < 1e-5
    assert relative(ours["se(coef)"], ref.standard_errors_.rename(names)) < 1e-5
    assert ours.attrs["concordance"] == pytest.approx(ref.concordance_index_, abs=1e-8)
    assert (ours.attrs["n"], ours.attrs["events"]) == (len(rows), int(rows.dead.sum()))


def test_an_input_site_that_is_down_fails_the_query_naming_it(five: Running) -> None:
    five.procs.kill("west")
    try:
        with pytest.raises((QueryFailed, SiteUnavailable)) as info:
            five.client.query("SELECT COUNT(*) AS n FROM lung")
        assert "west" in str(info.value)
    finally:
        five.procs.restart("west")
    # Back: the members take its new connection and policy, and answer again.
    answered = _eventually(lambda: five.client.query("SELECT COUNT(*) AS n FROM lung")["n"].tolist())
    assert answered == [len(five.pooled)]


def _eventually(ask: Callable[[], Any], seconds: float = 20.0) -> Any:
    """``ask()`` once it stops failing (a restarted site's connections come back within seconds)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return ask()
        except MpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)



def test_a_rotated_input_site_keeps_taking_part(five: Running) -> None:
    """west's certificate rotated by an approved change: the members refuse the old one, west
    takes up the new one without a restart, and queries over all five sites go on."""
    pid = five.procs.procs["west"].pid
    old = five.consortium.sites["west"].tls_fingerprint
    _cli("rotate", str(five.dir), "west")
    change = _latest_change(five)
    _approve(five, change, "north", "central", "south")
    _cli("apply", str(five.dir), str(change))
    assert five.consortium.sites["west"].tls_fingerprint != old
    assert _wait(lambda: bool(_logged(five, "west", "serving with the rotated certificate")), WATCH_BOUND + 1)
    answered = _eventually(lambda: five.client.query("SELECT COUNT(*) AS n FROM lung")["n"].tolist())
    assert answered == [len(five.pooled)]
    assert five.procs.procs["west"].pid == pid
