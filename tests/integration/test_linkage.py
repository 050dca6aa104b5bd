"""Record linkage over real agents: each site prepares its linkage keys with the three members
over mutual TLS, and the keys are the PRF under the recombined key; then the distinct counts on
the three sites' stored keys equal pandas on the pooled identifiers."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from site_agent.agent.linkage import POINTS_REVEAL, batch_frames, points_per_frame
from site_agent.audit.report import LINKAGE_KIND, build_report
from site_agent.cli.agent import main as agent_main
from site_agent.cli.linkage import evaluate_with_committee
from site_agent.config import load_agent, load_consortium
from site_agent.linkage import dedup, oprf
from site_agent.linkage.declaration import key_path, keys_db
from site_agent.linkage.identifiers import normalise
from site_agent.mpc.party import run_in_memory
from site_agent.net.framing import OUTSIDER, MsgType, encode

from ..lung import SITES
from .conftest import Dataset, Running, run, start_retrying

SCHEMA = """
[tables.patients]
pid = { type = "text", person = true }
age = "integer"
code = "integer"

[linkage]
table = "patients"
identifier = ["national_id"]
"""

PERSONS = 900


def national_ids() -> list[str]:
    rng = np.random.default_rng(13)
    return [f"{n:010d}" for n in rng.choice(10**10, size=PERSONS, replace=False)]


def membership() -> np.ndarray:
    """(persons, sites) booleans: who is seen where; every person somewhere, many at 2 or 3."""
    rng = np.random.default_rng(14)
    seen = rng.random((PERSONS, 3)) < 0.45
    seen[~seen.any(axis=1), 0] = True
    return seen


def spelled(nid: str, site: int) -> str:
    """Each site writes national ids its own way; normalisation makes them one."""
    return [nid, f"{nid[:3]} {nid[3:6]} {nid[6:]}", f"{nid[:3]}-{nid[3:6]}-{nid[6:]}"][site]


def frames() -> dict[str, pd.DataFrame]:
    ids, seen = national_ids(), membership()
    out = {}
    for s, site in enumerate(SITES):
        rows = np.flatnonzero(seen[:, s])
        out[site] = pd.DataFrame(
            {
                "pid": [f"{site[0]}{r:05d}" for r in rows],  # local patient numbers, unrelated across sites
                "national_id": [spelled(ids[r], s) for r in rows],
                "age": 20 + rows % 60,
                "code": rows,  # one value per person, the same at every site: a condition can single one out
            }
        )
    return out


def keygen(folder: Path) -> None:
    for site in SITES:
        assert agent_main(["linkage", "keygen", "--config", str(folder / "sites" / site / "agent.toml")]) == 0


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = Dataset("patients", SCHEMA, frames)
    policies = {s: {"identifiers": ["national_id"]} for s in SITES}
    running = start_retrying(tmp_path_factory.mktemp("linkage"), policies, data=data, customize=keygen)
    try:
        for site in SITES:
            assert agent_main(["linkage", "prepare", "--config", str(running.agent_toml(site))]) == 0
        yield running
    finally:
        running.close()


def stored_keys(running: Running, site: str) -> pd.DataFrame:
    con = duckdb.connect(str(keys_db(load_agent(running.agent_toml(site)))), read_only=True)
    try:
        return con.execute("SELECT person, key FROM _linkage ORDER BY person").fetchdf()
    finally:
        con.close()


def test_keys_are_the_prf_under_the_recombined_key(linked: Running) -> None:
    shares = [key_path(load_agent(linked.agent_toml(s))).read_bytes() for s in SITES]
    k = oprf.combine_shares(shares)
    by_national_id: dict[str, int] = {}
    for site in SITES:
        stored = stored_keys(linked, site)
        frame = linked.frames[site].set_index("pid").loc[stored["person"]]
        assert len(stored) == len(linked.frames[site])
        ids = normalise(frame.reset_index(), ["national_id"])
        expected = [int(oprf.prf(k, x)) for x in ids]
        assert stored["key"].to_numpy().view(np.uint64).tolist() == expected
        for nid, key in zip(frame["national_id"].str.replace(r"\D", "", regex=True), expected, strict=True):
            assert by_national_id.setdefault(nid, key) == key  # one person, one key at every site
    assert len(set(by_national_id.values())) == len(by_national_id)


def test_distinct_counts_on_the_stored_keys_equal_pandas(linked: Running) -> None:
    site_keys = [stored_keys(linked, s)["key"].to_numpy().view(np.uint64) for s in SITES]
    shares = dedup.deal_sites(site_keys)
    results, _ = run_in_memory(lambda p: dedup.linked_counts(p, *shares[p.index], 3, 5))
    assert results[0].values == pooled_counts(linked)


def linkage_entries(running: Running, member: str) -> list[dict[str, Any]]:
    return [e for e in running.audit(member) if e.get("kind") == LINKAGE_KIND]


def test_every_member_audits_each_sites_batch(linked: Running, capsys: pytest.CaptureFixture[str]) -> None:
    for member in SITES:
        answered = [e for e in linkage_entries(linked, member) if e["decision"] == "accepted"]
        # prepare ran once per site before any other test: one batch each, in the order they ran
        assert [e["analyst"] for e in answered[:3]] == list(SITES)
        for entry in answered[:3]:
            persons = len(linked.frames[entry["analyst"]])
            assert entry["reveals"] == [{"name": POINTS_REVEAL, "shape": [persons]}]
            assert entry["query"] == f"linkage keys: {persons} points"
            assert entry["time"] and entry["signature"]
        assert agent_main(["audit", "verify", "--config", str(linked.agent_toml(member))]) == 0
    report = build_report(
        linked.audit_path("north"),
        linked.consortium.site("north").public_key(),
        "north",
        dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    )
    for site in SITES:
        assert report.linkage[site]["points"] >= len(linked.frames[site])
    assert agent_main(["report", "--config", str(linked.agent_toml("north")), "--since", "2000-01-01"]) == 0
    out = capsys.readouterr().out
    assert f"linkage key requests from south: {report.linkage['south']['answered']} answered" in out


def test_an_analyst_cannot_evaluate_the_prf_and_is_audited(linked: Running) -> None:
    before = len(linkage_entries(linked, "north"))
    frames = batch_frames(oprf.blind([b"0123456789", b"1234567890"]).message, bytes(16), OUTSIDER, 4096)
    answer = run(linked.wire().exchange("north", encode(frames[0])))  # refused at the batch's header
    assert not any(f.type == MsgType.LINKAGE for f in answer.frames)
    assert "not a consortium site" in str([f.control for f in answer.frames])
    entries = linkage_entries(linked, "north")[before:]
    assert [(e["analyst"], e["decision"], e["query"]) for e in entries] == [
        ("analyst", "refused", "linkage keys: 2 points")
    ]
    assert "not a consortium site holding data" in entries[0]["reason"] and entries[0]["reveals"] == []
    assert agent_main(["audit", "verify", "--config", str(linked.agent_toml("north"))]) == 0


def test_prepare_splits_a_batch_over_the_frame_limit(linked: Running) -> None:
    """The frame limit lowered to 4 kB (126 points a frame): every site's batch takes several
    frames each way, the keys equal the stored ones, and each member audits the batch once."""
    site = "central"
    config = load_agent(linked.agent_toml(site))
    consortium = load_consortium(config.consortium)
    stored = stored_keys(linked, site)
    frame = linked.frames[site].set_index("pid").loc[stored["person"]].reset_index()
    ids = normalise(frame, ["national_id"]).tolist()
    assert len(ids) > 3 * points_per_frame(4096)
    before = {m: len(linkage_entries(linked, m)) for m in SITES}
    keys, _ = asyncio.run(evaluate_with_committee(config, consortium, ids, max_frame=4096))
    assert keys.tolist() == stored["key"].to_numpy().view(np.uint64).tolist()
    for member in SITES:
        new = linkage_entries(linked, member)[before[member] :]
        assert [(e["analyst"], e["decision"], e["reveals"][0]["shape"]) for e in new] == [
            (site, "accepted", [len(ids)])
        ]


def pooled_counts(running: Running, where: Callable[[pd.DataFrame], pd.Series] | None = None) -> list[int]:
    """Distinct persons and persons at exactly 1, 2, 3+ sites, by pandas on the pooled rows
    (national ids normalised by hand), the rows restricted to ``where``."""
    pooled = pd.concat(
        [f.assign(site=s, nid=f["national_id"].str.replace(r"\D", "", regex=True)) for s, f in running.frames.items()]
    )
    if where is not None:
        pooled = pooled[where(pooled)]
    per_person = pooled.groupby("nid")["site"].nunique()
    return [
        pooled["nid"].nunique(),
        int((per_person == 1).sum()),
        int((per_person == 2).sum()),
        int((per_person >= 3).sum()),
    ]


def test_count_distinct_person_over_the_agents(linked: Running) -> None:
    frame = linked.client.query("SELECT COUNT(DISTINCT PERSON) AS persons FROM patients")
    assert list(frame.columns) == ["persons", "at 1 site", "at 2 sites", "at 3+ sites"]
    assert frame.iloc[0].tolist() == pooled_counts(linked)
    assert len(frame.attrs["receipts"]) == 3


def test_count_distinct_person_with_a_where_equals_pandas(linked: Running) -> None:
    frame = linked.client.query("SELECT COUNT(DISTINCT PERSON) FROM patients WHERE age > 50 AND code % 3 <> 1")
    expected = pooled_counts(linked, lambda f: (f["age"] > 50) & (f["code"] % 3 != 1))
    assert frame.iloc[0].tolist() == expected and expected[2] > 0 and expected[3] > 0


def test_differencing_one_person_out_is_withheld(linked: Running) -> None:
    """``WHERE age > 40`` then ``WHERE age > 40 AND NOT (code = t)``: released, the second's counts
    minus the first's would tell whether person t is at two sites. The release ledger withholds them."""
    seen, ages = membership(), 20 + np.arange(PERSONS) % 60
    t = int(np.flatnonzero((seen.sum(axis=1) == 2) & (ages > 40))[0])
    first = linked.client.query("SELECT COUNT(DISTINCT PERSON) FROM patients WHERE age > 40")
    assert first.iloc[0].tolist() == pooled_counts(linked, lambda f: f["age"] > 40)
    second = linked.client.query(f"SELECT COUNT(DISTINCT PERSON) FROM patients WHERE age > 40 AND NOT (code = {t})")
    # The attacker's arithmetic: person t is at two sites iff the "at 2 sites" count dropped by one.
    truth = (
        pooled_counts(linked, lambda f: f["age"] > 40)[2]
        - pooled_counts(linked, lambda f: (f["age"] > 40) & (f["code"] != t))[2]
    )
    assert truth == 1  # released, the difference would have given person t away
    assert second.iloc[0].isna().all()  # nothing to subtract: the estimate cannot be made
    # the whole table, far from every set released before, is still answered
    assert linked.client.query("SELECT COUNT(DISTINCT PERSON) FROM patients").iloc[0].tolist() == pooled_counts(linked)
    # One ledger for both kinds: an aggregate one person away from the linkage set of age > 40
    # would give that person's number of rows; it is withheld.
    u = int(np.flatnonzero((seen.sum(axis=1) == 3) & (ages > 40))[0])
    rows = linked.client.query(f"SELECT COUNT(*) AS n FROM patients WHERE age > 40 AND NOT (code = {u})")
    assert pd.isna(pd.to_numeric(rows["n"], errors="coerce").iloc[0])
    control = linked.client.query("SELECT COUNT(*) AS n FROM patients WHERE age > 60")
    assert int(control["n"].iloc[0]) == int((linked.pooled["age"] > 60).sum())


def test_count_distinct_person_is_explained_with_its_reveals(linked: Running) -> None:
    text = linked.client.explain("SELECT COUNT(DISTINCT PERSON) FROM patients")
    assert "set sizes" in text and "sort comparisons" in text and "at least 5 persons" in text


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("SELECT COUNT(DISTINCT PERSON) FROM patients GROUP BY age", "GROUP BY"),
        ("SELECT COUNT(DISTINCT PERSON) FROM patients WHERE national_id = '1'", "national_id"),
        ("SELECT COUNT(DISTINCT PERSON), COUNT(*) FROM patients", "statement of its own"),
    ],
)
def test_linkage_statements_outside_the_first_slice_are_refused(linked: Running, query: str, words: str) -> None:
    with pytest.raises(Exception, match=words):
        linked.client.query(query)


def test_check_reports_linkage_ready(linked: Running, capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(["check", "--config", str(linked.agent_toml("north")), "--offline"]) == 0
    assert "ok    linkage: key share present, linkage keys prepared (table patients)" in capsys.readouterr().out


def test_a_linked_cohort_over_the_agents_equals_pandas(linked: Running) -> None:
    """The cohort (rows with age > 50, at any site) linked to the rows of every site with an even
    code: linked persons, rows, sum and mean of age as pandas gives them on the pooled rows
    matched on the national id; the plan says what is revealed."""
    query = (
        "SELECT COUNT(DISTINCT PERSON) AS persons, COUNT(*) AS n, SUM(a.age) AS s, AVG(a.age) AS m "
        "FROM patients c LINK patients a WHERE c.age > 50 AND a.code % 2 = 0"
    )
    pooled = pd.concat(
        [f.assign(site=s, nid=f["national_id"].str.replace(r"\D", "", regex=True)) for s, f in linked.frames.items()]
    )
    cohort = set(pooled.loc[pooled["age"] > 50, "nid"])
    rows = pooled[(pooled["code"] % 2 == 0) & pooled["nid"].isin(cohort)]
    frame = linked.client.query(query)
    assert list(frame.columns) == ["persons", "n", "s", "m"]
    got = frame.iloc[0]
    assert [got["persons"], got["n"], got["s"]] == [rows["nid"].nunique(), len(rows), int(rows["age"].sum())]
    assert got["m"] == pytest.approx(rows["age"].mean())
    text = " ".join(linked.client.explain(query).split())
    assert "set sizes" in text and "sort comparisons" in text and "no site learns which of its records matched" in text


def test_a_linked_cohort_one_person_apart_is_withheld(linked: Running) -> None:
    """The cohort of the test above without person t: released, the drop in linked persons would
    tell whether t has an outcome row. The release ledger (the cohort's persons are one of the
    statement's query sets) withholds every output of the second statement."""
    seen, ages = membership(), 20 + np.arange(PERSONS) % 60
    t = int(np.flatnonzero((seen.sum(axis=1) >= 1) & (ages > 50) & (np.arange(PERSONS) % 2 == 0))[0])
    base = "SELECT COUNT(DISTINCT PERSON) AS persons, COUNT(*) AS n FROM patients c LINK patients a WHERE "
    first = linked.client.query(base + "c.age > 50 AND a.code % 2 = 0")
    assert not first.iloc[0].isna().any()
    second = linked.client.query(base + f"c.age > 50 AND NOT (c.code = {t}) AND a.code % 2 = 0")
    assert second.iloc[0].isna().all()
