"""Smoke test of ``benchmarks/engine.py``: it runs at small sizes and reports every figure.

Not a timed test: it checks that the benchmark works end to end (including the MPyC
comparison when MPyC is installed) and that ``--json`` prints one object with the keys
docs/benchmarks.md describes, never the values.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OURS = [
    "fixed_mul_per_s",
    "fixed_mul_first_run_per_s",
    "fixed_mul_party_compute_per_s",
    "fixed_mul_max_error_units",
    "less_than_per_s",
    "median_seconds",
    "median_at_mpyc_n_seconds",
    "secure_sum_seconds",
    "reciprocal_max_rel_error",
    "sqrt_max_rel_error",
    "exp_max_rel_error",
    "log_max_rel_error",
    "sigmoid_max_rel_error",
]
PLAINTEXT = [
    "plaintext_fixed_mul_per_s",
    "plaintext_less_than_per_s",
    "plaintext_median_seconds",
    "plaintext_secure_sum_seconds",
]
MPYC = [
    "mpyc_fixed_mul_per_s",
    "mpyc_fixed_mul_max_error_units",
    "mpyc_less_than_per_s",
    "mpyc_median_seconds",
    "mpyc_secure_sum_seconds",
]
RATIOS = [
    "fixed_mul_ratio_vs_mpyc",
    "less_than_ratio_vs_mpyc",
    "median_ratio_vs_mpyc",
    "secure_sum_ratio_vs_mpyc",
    "fixed_mul_slowdown_vs_plaintext",
    "less_than_slowdown_vs_plaintext",
    "median_slowdown_vs_plaintext",
    "secure_sum_slowdown_vs_plaintext",
]


def test_quick_json_run_reports_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "engine.py"), "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert figures["quick"] is True
    for key in OURS + PLAINTEXT:
        assert figures[key] > 0, key
    assert figures["fixed_mul_max_error_units"] < 4
    with_mpyc = importlib.util.find_spec("mpyc") is not None
    for key in MPYC + RATIOS:
        needs_mpyc = key.startswith("mpyc_") or "vs_mpyc" in key
        assert figures[key] > 0 if with_mpyc or not needs_mpyc else figures[key] is None, key
    assert set(figures["targets"].values()) == {None}


QUERY_NAMES = ["count_avg_std_2keys", "median_by_group", "count"]


def test_queries_quick_json_run_over_agents(tmp_path: Path) -> None:
    """``benchmarks/queries.py --quick --json``: three agents, answers checked, every figure reported."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "queries.py"), "--quick", "--json", "--cache", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert figures["quick"] is True and figures["checked_against_pandas"] is True
    for name in QUERY_NAMES:
        for key in ("agents_best_s", "agents_median_s", "in_process_best_s", "pandas_best_s", "agents_vs_pandas"):
            assert figures[f"{name}_{key}"] > 0, f"{name}_{key}"
        assert 0 <= figures[f"{name}_network_share"] <= 1
    assert set(figures["targets"].values()) == {None}


def test_queries_with_input_only_sites(tmp_path: Path) -> None:
    """``queries.py --sites 4``: three members and one input-only site, answers checked."""
    argv = ["--quick", "--json", "--sites", "4", "--repeat", "1", "--latency-runs", "1", "--cache", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "queries.py"), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert figures["sites"] == 4 and figures["checked_against_pandas"] is True
    assert set(figures["agents_pids"]) == {"hospital-a", "hospital-b", "hospital-c", "hospital-d"}
    assert figures["all_2keys_agents_best_s"] > 0


def test_dp_benchmark_runs_at_a_small_size() -> None:
    """``benchmarks/dp.py``: exact and DP figures per phase and their ratio."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dp.py"), "--rows", "2000", "--repeat", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert set(figures) == {"rows_per_site", "exact", "dp", "dp_vs_exact_total"}
    assert set(figures["dp"]) == set(figures["exact"]) == {"local", "mpc", "total"}


def test_report_benchmark_small_json_run() -> None:
    """``benchmarks/report.py --entries 200 --repeat 1 --json``: the report of a real log, every figure."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--entries", "200", "--repeat", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert figures["entries"] == 200 and figures["html_bytes"] > 0
    for name in ("verify", "build", "text", "html", "cli_text", "cli_html"):
        assert figures[f"{name}_seconds"]["best"] > 0, name


def test_dp_accuracy_benchmark_runs_at_a_small_size() -> None:
    """``benchmarks/dp_accuracy.py --runs 20``: every calibration figure and the end-to-end share."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dp_accuracy.py"), "--runs", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert len(figures["calibrations"]) == 6 and figures["end_to_end_runs"] == 20
    assert all(c["exact_delta"] <= c["delta"] for c in figures["calibrations"])
    assert 0 <= figures["end_to_end_within_1pct"] <= 1
