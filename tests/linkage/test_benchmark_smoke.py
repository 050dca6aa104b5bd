"""Smoke test of ``benchmarks/linkage.py`` at a small size: it runs end to end (keys over three
agents, the distinct count in one process and over TLS, the linked cohort in one process, each
checked against pandas inside the script) and ``--json`` prints one object with the figures
docs/benchmarks.md describes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_linkage_benchmark_runs_small() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "linkage.py"), "--per-site", "300", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["truth"] == {"distinct persons": 660, "at 1 site": 450, "at 2 sites": 180, "at 3+ sites": 30}
    assert report["distinct_in_process"]["seconds"] > 0 and report["distinct_over_tls"]["seconds"] > 0
    assert report["linked_cohort_in_process"]["seconds"] > 0 and report["linked_cohort_in_process"]["records"] > 0
    assert len(report["prepare_over_agents"]["count_distinct_person_over_agents_seconds"]) == 2
    prepared = report["prepare_over_agents"]["sites"]
    assert sorted(prepared) == ["central", "north", "south"]
    assert all(
        s["persons"] == 300 and set(s["steps_seconds"]) >= {"blind", "members", "unblind"} for s in prepared.values()
    )
