"""Smoke tests of the model benchmarks (``benchmarks/models.py``, ``cox.py``, ``validate.py``) in
process at a small size: each runs, checks its answer against statsmodels (or scipy) and reports
the figures docs/benchmarks.md names. Not timed tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _report(script: str, tmp_path: Path) -> dict[str, Any]:
    args = ["--rows", "3000", "--repeat", "1", "--in-process", "--json", "--cache", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_in_process_run_reports_its_figures(tmp_path: Path) -> None:
    report = _report("models.py", tmp_path)
    for key in ("statsmodels_s", "in_process_best_s", "iterations", "rounds", "bytes", "coef_rel_err"):
        assert key in report
    assert report["coef_rel_err"] < 1e-6 and report["se_rel_err"] < 1e-6


def test_cox_in_process_run_reports_its_figures(tmp_path: Path) -> None:
    report = _report("cox.py", tmp_path)
    for key in ("statsmodels_s", "in_process_best_s", "iterations", "events", "rounds", "bytes", "coef_rel_err"):
        assert key in report
    assert report["coef_rel_err"] < 1e-5 and report["se_rel_err"] < 1e-5
    assert report["concordance_err"] < 1e-3 and report["validate_concordance_err"] < 1e-3


def test_validate_in_process_run_reports_its_figures(tmp_path: Path) -> None:
    report = _report("validate.py", tmp_path)
    for key in ("in_process_best_s", "rounds", "bytes", "auc_err", "grid_auc_error"):
        assert key in report
    assert report["auc_err"] < 1e-8 and report["slope_rel_err"] < 1e-6
