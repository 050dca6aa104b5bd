"""KAPLAN_MEIER benchmark: three sites x N rows, by two groups, over real agents and in-process,
beside lifelines on the pooled rows.

    python benchmarks/kaplan_meier.py [--rows 1000000] [--repeat 3] [--in-process] [--json]

Each site holds a Parquet file of ``rows`` patients: ``arm`` (two values), ``time`` in whole
days (exponential, mean 900 days for arm a and 1,100 for arm b, at most 3,650) and ``died``
(0/1, about two thirds). The statement is

    KAPLAN_MEIER time, died BY arm FROM patients

on the schema's grid of the time column ([0, 3650, 1] days, so the released steps are
lifelines' curve exactly); the default policy (k = 5) merges the grid into at most 128 blocks
(29 days). Timed: lifelines' two ``KaplanMeierFitter`` fits and ``logrank_test`` on the pooled
rows in memory; the in-process executor (``site_agent.query.execute``: the same local SQL,
sharing and MPC program, no network); ``Consortium.query()`` against three agent processes
over mutual TLS (after one warm-up query), best and median of ``--repeat`` runs. Each answer's
log-rank chi-square is checked against lifelines (1e-6, relative above 1) before any figure is
printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import harness
import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from site_agent.query import DisclosureRules, compile_query, execute
from site_agent.query.schema_file import load_schema_file

SEED = 20261207
SITES = ("hospital-a", "hospital-b", "hospital-c")
SCHEMA_TOML = """[tables.patients]
arm = { type = "text", domain = ["a", "b"] }
time = { type = "integer", grid = [0, 3650, 1] }
died = { type = "integer", domain = [0, 1] }
"""
QUERY = "KAPLAN_MEIER time, died BY arm FROM patients"


def site_files(cache: Path, rows: int) -> list[Path]:
    """Each site's Parquet file, generated once per (rows, seed) and cached."""
    folder = cache / f"survival-{rows}-{SEED}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{site}.parquet" for site in SITES]
    for k, path in enumerate(paths):
        if not path.exists():
            rng = np.random.default_rng([SEED, k])
            arm = rng.integers(0, 2, rows)
            time_ = np.minimum(np.ceil(rng.exponential(900 + 200 * arm)), 3650).astype(np.int64)
            died = ((rng.random(rows) < 0.67) & (time_ < 3650)).astype(np.int64)
            frame = pd.DataFrame({"arm": np.where(arm == 0, "a", "b"), "time": time_, "died": died})
            con = duckdb.connect()
            con.register("frame", frame)
            con.execute(f"COPY frame TO '{path}' (FORMAT parquet)")
            con.close()
    return paths


def lifelines_reference(pooled: pd.DataFrame) -> tuple[float, float]:
    """(seconds, chi-square): the two curves and the log-rank test in lifelines, in memory."""
    start = time.perf_counter()
    a, b = pooled[pooled.arm == "a"], pooled[pooled.arm == "b"]
    KaplanMeierFitter().fit(a.time, a.died)
    KaplanMeierFitter().fit(b.time, b.died)
    test = logrank_test(a.time, b.time, a.died, b.died)
    return time.perf_counter() - start, float(test.test_statistic)


def check(frame: pd.DataFrame, chi2: float, where: str) -> None:
    got = frame.attrs["logrank"]["test_statistic"]
    if abs(got - chi2) > 1e-6 * max(1.0, abs(chi2)):
        raise SystemExit(f"{where}: log-rank chi-square {got} differs from lifelines' {chi2}")


def in_process(paths: list[Path], chi2: float, repeat: int) -> dict[str, Any]:
    cons = {}
    for site, path in zip(SITES, paths, strict=True):
        con = duckdb.connect()
        con.execute(f"CREATE VIEW patients AS SELECT * FROM read_parquet('{path}')")
        cons[site] = con
    with tempfile.TemporaryDirectory() as tmp:
        schema_file = Path(tmp) / "schema.toml"
        schema_file.write_text(SCHEMA_TOML)
        schema = load_schema_file(schema_file)
    plan = compile_query(QUERY, schema, DisclosureRules(), SITES)
    seconds, frame = [], pd.DataFrame()
    for _ in range(repeat):
        frame = execute(plan, cons)
        seconds.append(frame.attrs["seconds"]["total"])
    check(frame, chi2, "in-process")
    return {"in_process_best_s": min(seconds), "in_process_rounds": frame.attrs["rounds"], "steps": len(frame)}


def over_agents(paths: list[Path], chi2: float, repeat: int) -> dict[str, Any]:
    seconds, frame = harness.over_agents(SITES, paths, "patients", QUERY, SCHEMA_TOML, repeat)
    check(frame, chi2, "agents")
    return {"agents_best_s": min(seconds), "agents_median_s": statistics.median(seconds)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per site")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="skip the agents")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mpc-jupyter-bench")
    args = parser.parse_args(argv)
    paths = site_files(args.cache, args.rows)
    pooled = pd.concat([duckdb.read_parquet(str(p)).df() for p in paths], ignore_index=True)
    plain_s, chi2 = lifelines_reference(pooled)
    figures: dict[str, Any] = {"rows_per_site": args.rows, "lifelines_s": plain_s, "chi2": chi2}
    figures |= in_process(paths, chi2, args.repeat)
    if not args.in_process:
        figures |= over_agents(paths, chi2, args.repeat)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        print(f"{key:>20}: {value:.3f}" if isinstance(value, float) else f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
