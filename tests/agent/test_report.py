"""The transparency report's summary, period, budget column, HTML escaping, and the verifier's
newest-signature path (which must still name the first bad line of a forged chain)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from site_agent.audit import AuditLog, Reveal
from site_agent.audit.entry import EXPLAINED, entry_hash
from site_agent.audit.render import NOT_RECORDED, render_html, render_text
from site_agent.audit.report import BUDGET_FIELD, build_report, parse_when, summarise
from site_agent.audit.verify import verified_entries
from site_agent.crypto.envelope import canonical_json
from site_agent.errors import AuditError

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()
DAY1 = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)


def _log(path: Path) -> None:
    """Two days: day 1 a release, a refusal and an explain; day 2 a release, a failure, a
    membership change and a connection refused before any request."""
    times = iter(
        [DAY1 + dt.timedelta(minutes=m) for m in range(3)] + [DAY1 + dt.timedelta(days=1, minutes=m) for m in range(4)]
    )
    with AuditLog(path, "north", KEY, clock=lambda: next(times)) as log:
        common: dict[str, Any] = {"policy_digest": "cd" * 32}
        log.append(
            analyst="alice",
            query="SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex",
            plan_digest="ab" * 32,
            decision="accepted",
            reveals=[Reveal("n", (3,))],
            kind="aggregate",
            **common,
        )
        log.append(
            analyst="mallory",
            query="SELECT '<b>x</b>' FROM lung",
            plan_digest=None,
            decision="refused",
            reason="policy: site 'north' refused (identifiers): no",
            rule="identifiers",
            **common,
        )
        log.append(
            analyst="alice",
            query="SELECT 1",
            plan_digest="ab" * 32,
            decision="accepted",
            reason=EXPLAINED,
            kind="model",
            **common,
        )
        log.append(
            analyst="bob",
            query="SELECT AVG(age) AS a FROM lung",
            plan_digest="ab" * 32,
            decision="accepted",
            reveals=[Reveal("a", (1,))],
            kind="aggregate",
            **common,
        )
        log.append(
            analyst="bob",
            query="SELECT 2",
            plan_digest="ab" * 32,
            decision="failed",
            reason="peer: gone",
            kind="aggregate",
            **common,
        )
        log.append(
            analyst="(consortium)", query="", plan_digest=None, decision="accepted", reason="membership v2", **common
        )
        log.append(
            analyst="eve",
            query="",
            plan_digest=None,
            decision="refused",
            reason="refused before any request: x",
            **common,
        )


def test_summary_of_a_period(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path)
    whole = build_report(path, PUB, "north", parse_when("2026-05-01"), parse_when("2026-05-02", end=True))
    assert whole.entries == 7 and whole.verified.entries == 7
    assert {k: dict(v) for k, v in whole.requests.items()} == {
        ("alice", "aggregate"): {"released": 1},
        ("alice", "model"): {"explained": 1},
        ("bob", "aggregate"): {"released": 1, "failed": 1},
        ("mallory", "-"): {"refused": 1},
    }
    assert dict(whole.rules) == {"identifiers": 1}
    assert [(o.analyst, o.reveals) for o in whole.outputs] == [("alice", (("n", (3,)),)), ("bob", (("a", (1,)),))]
    assert [e.analyst for e in whole.events] == ["(consortium)", "eve"]
    assert [f.rule for f in whole.failures] == ["peer"]
    assert not whole.budget_recorded
    day1 = build_report(path, PUB, "north", parse_when("2026-05-01"), parse_when("2026-05-01", end=True))
    assert day1.entries == 3 and dict(day1.totals()) == {"released": 1, "refused": 1, "explained": 1}
    later = build_report(path, PUB, "north", parse_when("2026-05-02T00:00:01"))
    assert later.entries == 4 and dict(later.totals()) == {"released": 1, "failed": 1}


def test_budget_column_reads_the_budget_field_and_says_when_none_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path)
    result, entries = verified_entries(path, PUB)
    plain = summarise("north", result, entries, parse_when("2026-05-01"))
    assert NOT_RECORDED in render_text(plain)
    # As the DP accountant records a query (site_agent.agent.service): its epsilon, and the
    # analyst's composed spend and budget at the site after it.
    dp = {"mechanism": "skellam", "epsilon": 0.5, "delta": 1e-6, "spent": 0.4, "budget": 3.0, "period": "month"}
    spent = [{**e, BUDGET_FIELD: dp} if e["decision"] == "accepted" and e["reveals"] else e for e in entries]
    report = summarise("north", result, spent, parse_when("2026-05-01"))
    assert report.budget == {"alice": 0.5, "bob": 0.5}
    assert report.balance == {"alice": (0.4, 3.0), "bob": (0.4, 3.0)}
    assert report.to_json()["budget"] == {"alice": 0.5, "bob": 0.5}
    assert [d["epsilon"] for d in report.to_json()["daily"]] == [0.5, 0.5]
    text = render_text(report)
    assert NOT_RECORDED not in text and "spent at this site after the last" in text
    assert "epsilon of DP queries per day" in render_html(report)


def test_html_escapes_what_analysts_wrote(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path)
    page = render_html(build_report(path, PUB, "north", parse_when("2026-05-01")))
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert page.count("<svg") == 1


def _forge(path: Path, line: int) -> None:
    """Edit entry ``line`` (1-based) and recompute every hash after it, as someone without the
    site's key would: the chain is whole again, the signatures are not."""
    entries = [json.loads(raw) for raw in path.read_bytes().splitlines()]
    entries[line - 1]["analyst"] = "nobody"
    prev = entries[line - 2]["hash"] if line > 1 else "0" * 64
    for entry in entries[line - 1 :]:
        entry["prev"] = prev
        entry["hash"] = prev = entry_hash(entry)
    path.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))


@pytest.mark.parametrize("line", [1, 4, 7])
def test_a_forged_chain_is_refused_naming_the_edited_line(tmp_path: Path, line: int) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path)
    _forge(path, line)
    for every in (True, False):
        result, entries = verified_entries(path, PUB, "north", every_signature=every)
        assert (result.ok, result.bad_line, len(entries)) == (False, line, line - 1)
        assert "signature" in result.reason
    with pytest.raises(AuditError, match=f"line {line} "):
        build_report(path, PUB, "north", parse_when("2026-05-01"))


def test_parse_when() -> None:
    assert parse_when("2026-05-01") == dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    assert parse_when("2026-05-01", end=True) == dt.datetime(2026, 5, 2, tzinfo=dt.UTC)
    assert parse_when("2026-05-01T10:30") == dt.datetime(2026, 5, 1, 10, 30, tzinfo=dt.UTC)
    assert parse_when("2026-05-01T10:30+02:00") == dt.datetime(2026, 5, 1, 8, 30, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        parse_when("May 1st")
