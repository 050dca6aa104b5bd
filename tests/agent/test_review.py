"""Output review without agents: the policy keys and their combination, the plan that carries the
reviewing sites, a held result's decisions, the store's share files, and a member's poll
(its DPO's decision recorded, the deadline that discards)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from site_agent.agent.models import ModelCompiled
from site_agent.agent.planning import compile_query
from site_agent.agent.reviews import ReviewDesk
from site_agent.audit import AuditLog, verify
from site_agent.errors import ConfigError, PolicyRefusal, ReviewError
from site_agent.mpc.party import run_in_memory
from site_agent.policy import Policy, combine, load_policy
from site_agent.query import Schema, schema_from_duckdb
from site_agent.review.store import APPROVED, DENIED, EXPIRED, PENDING, Held, ReviewStore

POLICY = """
[policy]
analysts = "*"

[privacy]
{privacy}

[tables.lung]
columns = "*"
"""


def _policy(tmp_path: Path, site: str, privacy: str) -> Policy:
    path = tmp_path / f"{site}.toml"
    path.write_text(POLICY.format(privacy=privacy))
    return load_policy(path, site)


def test_review_keys_combine_strictest_and_enter_the_plan_digest(tmp_path: Path) -> None:
    auto = _policy(tmp_path, "south", "")
    north = _policy(tmp_path, "north", 'review = "dpo"\nreview_hours = 24')
    central = _policy(tmp_path, "central", 'review = "dpo"')
    assert (auto.review, auto.review_hours, central.review_hours) == ("auto", 72, 72)
    assert Policy.from_json("north", north.to_json()) == north
    both = combine([auto, north, central])
    assert both.review_sites() == ("central", "north") and both.review_deadline_hours() == 24
    assert combine([auto]).review_sites() == ()
    con = duckdb.connect()
    con.execute("CREATE TABLE lung (sex VARCHAR, age DOUBLE)")
    schema = schema_from_duckdb(con, domains={"lung.sex": ["F", "M"]})
    text = "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex"
    plain, held = compile_query(text, schema, combine([auto])), compile_query(text, schema, both)
    assert plain.review is None and held.review == (["central", "north"], ["central", "north"], 24, 168)
    assert plain.digest != held.digest  # members that disagree on review never share anything
    assert "until the data-protection officers of central, north approve" in held.explain()
    for bad, key in (('review = "maybe"', "review"), ("review_hours = 0", "review_hours"), ("reviews = 1", "reviews")):
        with pytest.raises(ConfigError, match=key):
            _policy(tmp_path, "x", bad)


def _held(**overrides: Any) -> Held:
    fields: dict[str, Any] = {
        "id": "ab" * 32,
        "analyst": "alice",
        "query": "SELECT COUNT(*) AS n FROM lung",
        "plan_digest": "cd" * 32,
        "kind": "aggregate",
        "meta": {"flags": [0]},
        "reveals": [{"name": "n", "shape": [1]}],
        "sites": ["central", "north"],
        "created": 1000.0,
        "deadline": 1000.0 + 3600,
    }
    return Held(**{**fields, **overrides})


def test_decisions() -> None:
    held = _held()
    assert held.decide("north", APPROVED, "dpo", 1001) and held.state == PENDING and held.waiting == ["central"]
    assert not held.decide("north", APPROVED, "site north", 1002)  # the same decision again: nothing new
    with pytest.raises(ReviewError, match="already approved"):
        held.decide("north", DENIED, "dpo", 1003)
    with pytest.raises(ReviewError, match="not asked to review"):
        held.decide("south", APPROVED, "dpo", 1003)
    assert held.decide("central", APPROVED, "dpo", 1004) and held.state == APPROVED
    denied = _held()
    denied.decide("central", DENIED, "dpo", 1001)
    assert denied.state == DENIED and denied.denied_by == ["central"]
    with pytest.raises(ReviewError, match="can no longer be decided"):
        denied.decide("north", APPROVED, "dpo", 1002)
    late = _held()
    assert not late.expire(4599.0) and late.expire(4600.0) and late.state == EXPIRED
    assert Held.from_json(json.loads(json.dumps(held.to_json()))) == held


def test_store_keeps_shares_until_the_result_is_closed(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "review")
    shares = np.arange(8, dtype=np.uint64).reshape(2, 4)
    store.hold(_held(), shares)
    store.hold(_held(id="ac" * 32), shares)
    np.testing.assert_array_equal(store.shares("ab" * 32), shares)
    assert store.find("abab") == "ab" * 32
    for prefix in ("a", "ff", ""):
        with pytest.raises(ReviewError):
            store.find(prefix)
    store.update("ab" * 32, lambda h: h.decide("north", DENIED, "dpo", 1001))
    with pytest.raises(ReviewError, match="no longer held"):
        store.shares("ab" * 32)
    assert [h.state for h in store.all()] == [DENIED, PENDING]


class _NoLinks:
    """A mesh with no member connected: decisions are announced when links come up."""

    def __init__(self) -> None:
        self.links: dict[int, Any] = {}


def test_poll_records_the_dpo_decision_and_discards_at_the_deadline(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    store = ReviewStore(tmp_path / "review")
    store.hold(_held(), np.zeros((2, 1), dtype=np.uint64))
    with AuditLog(tmp_path / "audit.jsonl", "north", key) as audit:
        desk = ReviewDesk("north", 0, store, audit, _NoLinks(), lambda: "ef" * 32, lambda: ["central", "south"])  # type: ignore[arg-type]
        # What 'mpc-site-agent review approve' does: edit the store under its lock.
        store.update("ab" * 32, lambda h: h.decide("north", APPROVED, "dpo-jane", 1500))
        asyncio.run(desk.poll(2000.0))
        asyncio.run(desk.poll(2001.0))  # nothing new: no second entry
        asyncio.run(desk.poll(4600.0))  # central never decided: the deadline passed
    assert verify(tmp_path / "audit.jsonl", key.public_key(), "north").ok
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(e["review"]["action"], e["decision"]) for e in entries] == [
        ("approved", "accepted"),
        ("expired", "refused"),
    ]
    assert "dpo-jane" in entries[0]["reason"] and "not approved by central" in entries[1]["reason"]
    assert all(e["reveals"] == [] for e in entries)
    (held,) = store.all()
    assert held.state == EXPIRED and held.decisions["north"].recorded
    assert not list((tmp_path / "review").glob("*.npy"))
    with AuditLog(tmp_path / "audit.jsonl", "north", key) as audit:
        desk = ReviewDesk("north", 0, store, audit, _NoLinks(), lambda: "ef" * 32, lambda: [])  # type: ignore[arg-type]
        asyncio.run(desk.poll(4600.0 + 29 * 86400))
        assert store.all() and audit.next_seq == 2  # kept a while after its deadline, nothing new logged
        asyncio.run(desk.poll(4600.0 + 31 * 86400))
    assert store.all() == []


def test_retention_keys_combine_to_the_smallest_and_enter_the_plan(tmp_path: Path) -> None:
    north = _policy(tmp_path, "north", 'review = "dpo"\nreview_keep_hours = 48')
    south = _policy(tmp_path, "south", "review_keep_hours = 12")  # a site without review holds shares too
    assert (_policy(tmp_path, "central", "").review_keep_hours, north.review_keep_hours) == (168, 48)
    assert Policy.from_json("north", north.to_json()) == north
    both = combine([north, south])
    assert both.review_keep_hours == 12 and both.review_deadline_hours() == 72
    con = duckdb.connect()
    con.execute("CREATE TABLE lung (sex VARCHAR, age DOUBLE)")
    schema = schema_from_duckdb(con, domains={"lung.sex": ["F", "M"]})
    held = compile_query("SELECT COUNT(*) AS n FROM lung", schema, both)
    assert held.review == (["north"], ["north"], 72, 12)
    assert "at most 12 hours after the last approval" in held.explain()
    with pytest.raises(ConfigError, match="review_keep_hours"):
        _policy(tmp_path, "x", "review_keep_hours = 0")


def test_an_approved_result_expires_after_its_retention_from_the_last_approval() -> None:
    held = _held(keep_hours=2)
    held.decide("north", APPROVED, "dpo", 1500)
    assert held.keep_until is None and held.closes_at == held.deadline
    held.decide("central", APPROVED, "dpo", 1800)
    assert held.state == APPROVED and held.keep_until == 1800 + 2 * 3600 and held.closes_at == held.keep_until
    assert not held.expire(held.deadline + 1.0)  # approved: the review deadline no longer applies
    assert held.expire(1800 + 2 * 3600) and held.state == EXPIRED and held.closes_at is None


class _Conn:
    """The analyst's connection as a member sees it: who, and the frames sent to it."""

    def __init__(self, analyst: str) -> None:
        self.peer_name, self.peer_index, self.label = analyst, None, f"analyst {analyst}"
        self.frames: list[Any] = []

    async def send_frame(self, frame: Any) -> None:
        self.frames.append(frame)


def test_fetch_repeats_the_same_release_until_receipt_then_retention_discards(tmp_path: Path) -> None:
    """A fetch cut off midway is repeated: the same shares, the same receipt, one ``released``
    entry. The analyst's confirmation deletes the shares; an approved result never confirmed is
    deleted at its retention, with an ``expired`` entry that says it was sent."""
    key = Ed25519PrivateKey.generate()
    store = ReviewStore(tmp_path / "review")
    shares = np.arange(6, dtype=np.uint64).reshape(2, 3)
    store.hold(_held(keep_hours=1), shares)
    store.hold(_held(id="ac" * 32, keep_hours=1), shares + 1)
    for held_id in ("ab" * 32, "ac" * 32):
        for site in ("central", "north"):
            store.update(held_id, lambda h, s=site: h.decide(s, APPROVED, "dpo", 2000, recorded=True))
    with AuditLog(tmp_path / "audit.jsonl", "north", key) as audit:
        desk = ReviewDesk("north", 0, store, audit, _NoLinks(), lambda: "ef" * 32, lambda: [])  # type: ignore[arg-type]
        mallory, alice = _Conn("mallory"), _Conn("alice")
        asyncio.run(desk.on_fetch(mallory, {"query_ids": ["ab" * 32]}))  # type: ignore[arg-type]
        assert mallory.frames == [] and audit.next_seq == 0  # someone else's result: nothing
        for _ in range(2):
            asyncio.run(desk.on_fetch(alice, {"query_ids": ["ab" * 32]}))  # type: ignore[arg-type]
        first, again = alice.frames[0:2], alice.frames[2:4]
        assert first[0].control == again[0].control  # the same metadata and receipt
        np.testing.assert_array_equal(first[1].array, shares)
        np.testing.assert_array_equal(again[1].array, shares)
        asyncio.run(desk.on_confirm(mallory, {"query_ids": ["ab" * 32]}))  # type: ignore[arg-type]
        assert store.get("ab" * 32).state == APPROVED  # type: ignore[union-attr]
        asyncio.run(desk.on_confirm(alice, {"query_ids": ["ab" * 32, "ac" * 32]}))  # "ac" never sent: kept
        assert [h.state for h in store.all()] == ["released", APPROVED]
        alice.frames.clear()
        asyncio.run(desk.on_fetch(alice, {"query_ids": ["ab" * 32]}))  # type: ignore[arg-type]
        assert alice.frames == []  # confirmed: the shares are gone
        asyncio.run(desk.on_fetch(alice, {"query_ids": ["ac" * 32]}))  # sent, then never confirmed
        asyncio.run(desk.poll(2000 + 3599.0))
        assert store.get("ac" * 32).state == APPROVED  # type: ignore[union-attr]
        asyncio.run(desk.poll(2000 + 3600.0))
    assert verify(tmp_path / "audit.jsonl", key.public_key(), "north").ok
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(e["review"]["id"][:2], e["review"]["action"]) for e in entries] == [
        ("ab", "released"),
        ("ac", "released"),
        ("ac", "expired"),
    ]
    assert "receipt was not confirmed" in entries[-1]["reason"]
    assert store.get("ac" * 32).state == EXPIRED  # type: ignore[union-attr]
    assert not list((tmp_path / "review").glob("*.npy"))


def _sites_of(frame: pd.DataFrame) -> tuple[list[Any], Schema]:
    """``frame`` as table ``lung`` cut into three DuckDB sites, and the schema."""
    cons = []
    for part in np.array_split(np.arange(len(frame)), 3):
        con = duckdb.connect()
        con.register("part", frame.iloc[part].reset_index(drop=True))
        con.execute("CREATE TABLE lung AS SELECT * FROM part")
        cons.append(con)
    return cons, schema_from_duckdb(cons[0], domains={"lung.sex": [1, 2]})


def test_a_model_at_a_dpo_site_is_held_and_opens_only_its_sizes_as_bands(tmp_path: Path) -> None:
    """Issue 10, item 5: a LOGISTIC under a "dpo" site's policy carries the review terms (for the
    "dpo" sites only: models refuse rather than withhold) and the declared ``bands`` reveal; run
    on three in-process sites, its program opens the persons and events as bands, which equal
    the bands of pandas' counts on the pooled rows; a "failing" site alone holds nothing, and DP
    and record linkage stay refused at a "dpo" site, saying why."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"age": rng.normal(60, 9, 160).round(), "sex": rng.integers(1, 3, 160)})
    frame["dead"] = (rng.random(160) < 1 / (1 + np.exp(-(frame.age - 60) / 10))).astype(int)
    cons, schema = _sites_of(frame)
    dpo, failing = _policy(tmp_path, "north", 'review = "dpo"'), _policy(tmp_path, "central", 'review = "failing"')
    auto = _policy(tmp_path, "south", "")
    text = "LOGISTIC dead = 1 ~ age + C(sex) FROM lung"
    plan = compile_query(text, schema, combine([dpo, failing, auto]))
    assert isinstance(plan, ModelCompiled)
    assert plan.review == (["north"], [], 72, 168) and plan.held_by({}) == ["north"]
    assert any(r.name == "bands" for r in plan.reveals)
    assert "until the data-protection officers of north approve" in plan.explain()
    assert "[committee] bands:" in plan.explain()
    plain = compile_query(text, schema, combine([failing, auto]))
    assert plain.review is None and plain.digest != plan.digest
    with pytest.raises(PolicyRefusal, match="noised") as refused:
        compile_query("SELECT COUNT(*) AS n FROM lung", schema, combine([dpo, auto]), {"@dp": {"epsilon": 1.0}})
    assert refused.value.rule == "review"
    with pytest.raises(PolicyRefusal, match="record-linkage flow") as refused:
        compile_query("SELECT COUNT(DISTINCT PERSON) AS n FROM lung", schema, combine([dpo, auto]))
    assert refused.value.rule == "review"

    kind, model_plan = plan.model, plan.plan
    steps = [(lambda params, con=con: kind.local(model_plan, con, True, params)) for con in cons]
    results, _ = run_in_memory(lambda p: kind.program(p, model_plan, steps[p.index]), seed=7)
    meta = results[0][1]
    assert all(r[1]["bands"] == meta["bands"] for r in results)
    events = int(frame.dead.sum())
    assert meta["bands"] == ["persons: 100-199", f"events: {_band(events)}"]
    unheld, _ = run_in_memory(lambda p: kind.program(p, plain.plan, steps[p.index]), seed=7)
    assert "bands" not in unheld[0][1]  # not held: nothing opened for a DPO


def _band(size: int) -> str:
    bounds = [(0, 9), (10, 19), (20, 49), (50, 99), (100, 199), (200, 499), (500, 999)]
    return next((f"{lo}-{hi}" for lo, hi in bounds if lo <= size <= hi), "1000+")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("COX time, status = 2 ~ age + sex FROM lung", lambda rows: [("persons", rows), ("events", rows.status == 2)]),
        (
            "VALIDATE LOGISTIC status = 2 ~ 1.2 + 0.01*age FROM lung BY sex",
            lambda rows: [(f"sex = {s}", rows.sex == s) for s in (1, 2)],
        ),
    ],
)
def test_cox_and_validate_held_open_their_sizes_as_bands(tmp_path: Path, text: str, expected: Any) -> None:
    """COX's persons and events, VALIDATE's persons per BY group: each band equals the band of
    pandas' count on the pooled lung rows (in-process sites; the plan held at a "dpo" site)."""
    from lifelines.datasets import load_lung

    lung = load_lung().rename(columns=lambda c: c.replace(".", "_"))
    lung["status"] = lung["status"] + 1
    lung.insert(0, "id", range(1, len(lung) + 1))
    cons = []
    for part in np.array_split(np.arange(len(lung)), 3):
        con = duckdb.connect()
        con.register("part", lung.iloc[part].reset_index(drop=True))
        con.execute("CREATE TABLE lung AS SELECT * FROM part")
        cons.append(con)
    grids = {"lung.time": (0.0, 1100.0, 1.0), "lung.age": (30.0, 90.0, 1.0)}
    schema = schema_from_duckdb(cons[0], {"lung.sex": [1, 2]}, grids, {"lung": "id"})
    plan = compile_query(text, schema, combine([_policy(tmp_path, "north", 'review = "dpo"')]))
    assert isinstance(plan, ModelCompiled) and plan.held_by({}) == ["north"]
    kind = plan.model
    steps = [(lambda params, con=con: kind.local(plan.plan, con, True, params)) for con in cons]
    results, _ = run_in_memory(lambda p: kind.program(p, plan.plan, steps[p.index]), seed=3)
    rows = lung.dropna(subset=["time", "status", "age", "sex"])
    want = [
        f"{label}: {_band(int(mask.sum()) if isinstance(mask, pd.Series) else len(mask))}"
        for label, mask in expected(rows)
    ]
    assert results[0][1]["bands"] == want
