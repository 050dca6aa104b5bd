"""Transparency report benchmark: ``mpc-site-agent report`` over an audit log of N entries.

    python benchmarks/report.py [--entries 10000] [--repeat 3] [--json]

A local consortium's files are built in a temporary folder (``mpc_jupyter.demo.consortium``:
keys, certificates, agent.toml; no agent runs), and the site's real ``AuditLog`` is filled
with N signed, chained entries spread over 30 days: five analysts, every statement kind,
released queries with their outputs' names and shapes, policy refusals with their rules,
failures, explains and a few membership changes, about as a busy month of one site looks.

Timed, best and median of ``--repeat`` runs:

* ``verify_seconds``: ``audit verify``'s checks alone (``site_agent.audit.verify``);
* ``build_seconds``: verify and summarise (``build_report``), in process;
* ``text_seconds``, ``html_seconds``: rendering (the HTML includes the chart, and the first
  run pays matplotlib's import);
* ``cli_text_seconds``, ``cli_html_seconds``: the whole command as a hospital's IT runs it,
  ``mpc-site-agent report --since ... [--html FILE]`` in a fresh Python process.

The issue's target is a report for 10,000 entries within 2 s (``cli_*`` figures).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpc_jupyter.demo.consortium import SiteSpec, build_consortium
from site_agent.audit import AuditLog, Reveal, verify
from site_agent.audit.entry import EXPLAINED
from site_agent.audit.render import render_html, render_text
from site_agent.audit.report import build_report
from site_agent.config import load_agent, load_consortium
from site_agent.crypto.signing import load_private_key

SCHEMA = """\
[tables.lung]
person = "id"
[tables.lung.columns]
id = { type = "integer" }
age = { type = "integer" }
"""
ANALYSTS = ("alice", "bob", "carol", "dave", "erin")
KINDS = ("aggregate", "per_site_breakdown", "model")
RULES = ("statement_kinds", "identifiers", "columns", "max_groups", "allow_min_max")
START = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)


def fill(path: Path, site: str, key_path: Path, n: int) -> None:
    """N entries as the agent writes them, at times spread evenly over 30 days."""
    key = load_private_key(key_path)
    step = dt.timedelta(days=30) / n
    clock_at = [START]

    def clock() -> dt.datetime:
        return clock_at[0]

    with AuditLog(path, site, key, clock=clock) as log:
        for i in range(n):
            clock_at[0] = START + i * step
            analyst = ANALYSTS[i % len(ANALYSTS)]
            kind = KINDS[i % len(KINDS)]
            query = f"SELECT sex, COUNT(*) AS n, AVG(age) AS mean_age FROM lung WHERE age > {i % 70} GROUP BY sex"
            common: dict[str, Any] = {"analyst": analyst, "query": query, "policy_digest": "cd" * 32}
            peers = ["central", "south"]
            r = i % 20
            if r < 12:
                log.append(
                    **common,
                    plan_digest="ab" * 32,
                    decision="accepted",
                    reveals=[Reveal("n", (3,)), Reveal("mean_age", (3,))],
                    peers=peers,
                    timings={"seconds": 0.4},
                    kind=kind,
                )
            elif r < 15:
                rule = RULES[i % len(RULES)]
                log.append(
                    **common,
                    plan_digest=None,
                    decision="refused",
                    reason=f"policy: site 'south' refused ({rule}): not allowed",
                    peers=peers,
                    rule=rule,
                )
            elif r < 17:
                log.append(**common, plan_digest="ab" * 32, decision="accepted", reason=EXPLAINED, kind=kind)
            elif r < 19:
                log.append(
                    **common,
                    plan_digest="ab" * 32,
                    decision="failed",
                    reason="peer: site central did not answer",
                    kind=kind,
                )
            else:
                log.append(
                    analyst="(consortium)",
                    query="",
                    plan_digest=None,
                    policy_digest="cd" * 32,
                    decision="accepted",
                    reason="membership version 2 approved by north, south",
                )


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return {"best": min(runs), "median": statistics.median(runs), "first": runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mpc-report-bench-") as tmp:
        root = Path(tmp)
        sites = [SiteSpec(name, {}) for name in ("north", "central", "south")]
        with contextlib.redirect_stdout(sys.stderr):  # the builder's progress lines; --json prints one object
            consortium_path = build_consortium(root / "consortium", sites, SCHEMA)
        agent_toml = root / "consortium" / "sites" / "north" / "agent.toml"
        config = load_agent(agent_toml)
        public_key = load_consortium(consortium_path).site("north").public_key()
        t0 = time.perf_counter()
        fill(config.audit_log, "north", config.signing_key, args.entries)
        fill_seconds = time.perf_counter() - t0
        since, until = START, START + dt.timedelta(days=31)
        report = build_report(config.audit_log, public_key, "north", since, until)
        assert report.entries == args.entries, (report.entries, args.entries)
        html_file = root / "report.html"
        cli = [sys.executable, "-m", "site_agent.cli.agent", "report", "--config", str(agent_toml)]
        cli += ["--since", "2026-05-01", "--until", "2026-05-31"]

        def run_cli(*extra: str) -> None:
            subprocess.run([*cli, *extra], check=True, stdout=subprocess.DEVNULL)

        figures = {
            "entries": args.entries,
            "fill_seconds": fill_seconds,
            "html_seconds": timed(lambda: render_html(report), args.repeat),
            "verify_seconds": timed(lambda: verify(config.audit_log, public_key, "north"), args.repeat),
            "build_seconds": timed(lambda: build_report(config.audit_log, public_key, "north", since), args.repeat),
            "text_seconds": timed(lambda: render_text(report), args.repeat),
            "cli_text_seconds": timed(run_cli, args.repeat),
            "cli_html_seconds": timed(lambda: run_cli("--html", str(html_file)), args.repeat),
            "html_bytes": len(html_file.read_bytes()),
        }
    if args.json:
        print(json.dumps(figures, sort_keys=True))
        return 0
    print(f"audit log of {args.entries} entries (filled in {fill_seconds:.2f} s)")
    for name, value in figures.items():
        if isinstance(value, dict):
            best, median, first = value["best"], value["median"], value["first"]
            print(f"  {name:18s} best {best:.3f} s  median {median:.3f} s  first {first:.3f} s")
    print(f"  html_bytes         {figures['html_bytes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
