"""Issue 10, item 6: the transparency report from real agents' audit logs.

Two analysts run real queries through three real agents: released aggregates and a per-site
breakdown, policy refusals (MIN/MAX, an identifier), a query that does not parse (carrying
``<script>`` to the HTML page), and an explain. ``mpc-site-agent report`` then runs as a
subprocess at every site, and its counts are checked against the site's audit entries read
here independently, line by line, as JSON. A copy of a log with one edited line gets no report,
and the message names that line.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpc_jupyter.client import Consortium, QueryFailed
from site_agent.cli.consortium import main as consortium_cli

from .conftest import SITES, Running, start_retrying
from .test_happy_path import agent_cli

SECOND = "bob"
SCRIPT = "SELECT <script>alert(1)</script> FROM lung"


def _add_second_analyst(folder: Path) -> None:
    assert consortium_cli(["add-analyst", str(folder), SECOND]) == 0


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A consortium whose logs hold every kind of entry the report summarises."""
    running = start_retrying(tmp_path_factory.mktemp("report"), {}, customize=_add_second_analyst)
    try:
        with Consortium.connect(running.config, SECOND) as bob:
            running.client.query("SELECT sex, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY sex")
            running.client.query("SELECT SITE, COUNT(*) AS n FROM lung GROUP BY SITE")
            bob.query("SELECT COUNT(*) AS n FROM lung")
            for client, text in (
                (bob, "SELECT MIN(age) AS youngest FROM lung"),
                (running.client, "SELECT COUNT(*) AS n FROM lung WHERE id > 3"),
                (bob, SCRIPT),
            ):
                with pytest.raises(QueryFailed):
                    client.query(text)
            bob.explain("SELECT status, COUNT(*) AS n FROM lung GROUP BY status")
        for site in SITES:  # every member has written its entry for the last request
            running.wait_audit(site, 6)  # until the seventh entry is there
        yield running
    finally:
        running.close()


def _since() -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()


def _report_json(running: Running, site: str) -> dict[str, Any]:
    done = agent_cli("report", "--config", str(running.agent_toml(site)), "--since", _since(), "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _expected(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the report must say, computed here from the raw entries (not with the report's code)."""
    requests: Counter[tuple[str, str, str]] = Counter()
    rules: Counter[str] = Counter()
    outputs = []
    for e in entries:
        kind = e.get("kind", "-")
        if e["reason"].startswith("explain:"):
            outcome = "explained"
        elif e["decision"] == "accepted":
            outcome = "released"
            outputs.append((e["seq"], e["analyst"], e["query"], [(r["name"], r["shape"]) for r in e["reveals"]]))
        elif e["decision"] == "refused":
            outcome = "refused"
            rules[e.get("rule") or e["reason"].split(":")[0]] += 1
        else:
            outcome = "failed"
        requests[(e["analyst"], kind, outcome)] += 1
    return {"requests": requests, "rules": rules, "outputs": outputs}


@pytest.mark.parametrize("site", SITES)
def test_report_counts_equal_the_audit_entries(logged: Running, site: str) -> None:
    entries = logged.audit(site)
    report = _report_json(logged, site)
    expected = _expected(entries)
    assert report["verified_entries"] == report["entries"] == len(entries) == 7
    got = Counter(
        {
            (row["analyst"], row["kind"], outcome): row[outcome]
            for row in report["requests"]
            for outcome in ("released", "held", "refused", "failed", "explained")
            if row[outcome]
        }
    )
    assert got == expected["requests"]
    # What the queries were: three released (two by the analyst, one by bob), three refused, one explain.
    assert got[("analyst", "aggregate", "released")] == 1
    assert got[("analyst", "per_site_breakdown", "released")] == 1
    assert got[("bob", "aggregate", "released")] == 1
    assert sum(n for (_, _, o), n in got.items() if o == "refused") == 3
    assert got[("bob", "aggregate", "explained")] == 1
    assert report["rules"] == dict(expected["rules"])
    assert {"allow_min_max", "identifiers", "query"} == set(report["rules"])
    assert [
        (o["seq"], o["analyst"], o["query"], [(r["name"], r["shape"]) for r in o["reveals"]]) for o in report["outputs"]
    ] == expected["outputs"]
    assert report["budget"] is None  # no entry records a budget (exact mode)
    assert [d["released"] for d in report["daily"]] and sum(d["released"] for d in report["daily"]) == 3


def test_report_text_and_html(logged: Running, tmp_path: Path) -> None:
    toml = str(logged.agent_toml("north"))
    text = agent_cli("report", "--config", toml, "--since", _since())
    assert text.returncode == 0, text.stderr
    # analyst, kind, released, held, refused, failed, explained; "-": refused before a plan existed
    assert re.search(r"^analyst\s+aggregate\s+1\s+0\s+0\s+0\s+0$", text.stdout, re.M), text.stdout
    assert re.search(r"^analyst\s+-\s+0\s+0\s+1\s+0\s+0$", text.stdout, re.M), text.stdout
    assert re.search(r"^allow_min_max\s+1$", text.stdout, re.M)
    page = tmp_path / "report.html"
    html = agent_cli("report", "--config", toml, "--since", _since(), "--html", str(page))
    assert html.returncode == 0, html.stderr
    body = page.read_text()
    assert "<svg" in body and "requests per day" in body
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    # A period before any entry: nothing in it, and still a verified log.
    empty = agent_cli("report", "--config", toml, "--since", "2001-01-01", "--until", "2001-01-31", "--json")
    assert json.loads(empty.stdout)["entries"] == 0


def test_report_refuses_an_edited_log_naming_the_line(logged: Running, tmp_path: Path) -> None:
    lines = logged.audit_path("south").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"analyst":"', b'"analyst":"x', 1)
    copy = logged.agent_toml("south").parent / "audit" / "edited.jsonl"
    copy.write_bytes(b"".join(lines))
    toml = logged.agent_toml("south").parent / "agent-edited.toml"
    toml.write_text(logged.agent_toml("south").read_text().replace("audit/audit.jsonl", "audit/edited.jsonl"))
    done = agent_cli("report", "--config", str(toml), "--since", _since())
    assert done.returncode == 1
    assert "line 3" in done.stderr and "no report" in done.stderr, done.stderr
    assert done.stdout == ""
