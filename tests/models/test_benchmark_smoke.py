"""Smoke test of ``benchmarks/models.py`` in process at a small size: it runs, checks its answer
against statsmodels and reports the figures docs/benchmarks.md names. Not a timed test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_in_process_run_reports_its_figures(tmp_path: Path) -> None:
    args = ["--rows", "3000", "--repeat", "1", "--in-process", "--json", "--cache", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "models.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("statsmodels_s", "in_process_best_s", "iterations", "rounds", "bytes", "coef_rel_err"):
        assert key in report
    assert report["coef_rel_err"] < 1e-6 and report["se_rel_err"] < 1e-6


def test_validate_in_process_run_reports_its_figures(tmp_path: Path) -> None:
    args = ["--rows", "3000", "--repeat", "1", "--in-process", "--json", "--cache", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "validate.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("in_process_best_s", "rounds", "bytes", "auc_err", "grid_auc_error"):
        assert key in report
    assert report["auc_err"] < 1e-8 and report["slope_rel_err"] < 1e-6
