"""Model benchmark: LOGISTIC with 10 covariates on three sites x N rows, beside statsmodels.

    python benchmarks/models.py [--rows 1000000] [--repeat 3] [--in-process] [--json]

Each site's rows (``x1`` ... ``x10`` standard normal, ``y`` drawn from a logistic model with
known coefficients) are generated from a seed and cached as Parquet under ``--cache``. Over
agents (the default) a local consortium is built in a temporary folder
(``mpc_jupyter.demo.consortium``): three ``mpc-site-agent serve`` processes on loopback with
mutual TLS, each reading its own Parquet file with DuckDB; ``Consortium.query()`` is timed
from the call until the summary is back (best and median of ``--repeat`` runs, after one
warm-up). The in-process executor (``site_agent.models.statement.execute``: the same local SQL
and MPC program, no network, the three sites' local steps one after the other) runs the same
statement, and statsmodels' ``Logit`` fits the pooled rows in memory (the time of a central
data warehouse). Every answer is checked against statsmodels (coefficients and standard
errors to 1e-6 relative); a mismatch stops the benchmark.

Target (issue 11): LOGISTIC, 10 covariates, 3 sites x 1,000,000 rows over agents <= 5 s.
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
import statsmodels.api as sm

from site_agent.query.catalog import schema_from_duckdb

SITES = ("north", "central", "south")
SEED = 20241107
COVARIATES = [f"x{j}" for j in range(1, 11)]
TRUE = np.array([-0.5, 0.8, -0.4, 0.3, 0.0, 0.2, -0.2, 0.5, -0.7, 0.1, 0.25])
STATEMENT = f"LOGISTIC y ~ {' + '.join(COVARIATES)} FROM cohort"
SCHEMA_TOML = "[tables.cohort]\n" + "".join(f'{c} = "float"\n' for c in COVARIATES) + 'y = "integer"\n'


def site_files(cache: Path, rows: int) -> list[Path]:
    folder = cache / f"logistic-{rows}-{SEED}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{site}.parquet" for site in SITES]
    for k, path in enumerate(paths):
        if not path.exists():
            rng = np.random.default_rng([SEED, k])
            x = rng.standard_normal((rows, len(COVARIATES)))
            eta = TRUE[0] + x @ TRUE[1:]
            y = (rng.random(rows) < 1 / (1 + np.exp(-eta))).astype(np.int64)
            frame = pd.DataFrame(x, columns=COVARIATES).assign(y=y)
            tmp = path.with_suffix(".tmp")
            con = duckdb.connect()
            con.register("frame", frame)
            con.execute(f"COPY frame TO '{tmp}' (FORMAT parquet)")
            con.close()
            tmp.rename(path)
    return paths


def reference(paths: list[Path]) -> tuple[float, Any]:
    pooled = pd.concat([duckdb.read_parquet(str(p)).df() for p in paths], ignore_index=True)
    started = time.perf_counter()
    fit = sm.Logit(pooled["y"], sm.add_constant(pooled[COVARIATES])).fit(disp=0, tol=1e-10)
    return time.perf_counter() - started, fit


def check(frame: pd.DataFrame, fit: Any, where: str) -> dict[str, float]:
    coef = float(np.max(np.abs(frame["coef"].to_numpy() - fit.params.to_numpy()) / np.abs(fit.params.to_numpy())))
    se = float(np.max(np.abs(frame["std err"].to_numpy() - fit.bse.to_numpy()) / fit.bse.to_numpy()))
    if coef > 1e-6 or se > 1e-6:
        raise SystemExit(f"{where}: differs from statsmodels (coef {coef:.2e}, se {se:.2e} relative)")
    return {"coef_rel_err": coef, "se_rel_err": se}


def in_process(paths: list[Path], repeat: int) -> tuple[list[float], pd.DataFrame, dict[str, Any]]:
    seconds, frame = harness.in_process(SITES, paths, "cohort", STATEMENT, schema_from_duckdb, repeat)
    return seconds, frame, {"rounds": frame.attrs["rounds"], "bytes": frame.attrs["bytes"]}


def over_agents(paths: list[Path], repeat: int) -> tuple[list[float], pd.DataFrame]:
    return harness.over_agents(SITES, paths, "cohort", STATEMENT, SCHEMA_TOML, repeat)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per site")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="skip the agents")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mpc-jupyter-bench")
    args = parser.parse_args(argv)
    paths = site_files(args.cache, args.rows)
    ref_seconds, fit = reference(paths)
    report: dict[str, Any] = {"rows_per_site": args.rows, "covariates": len(COVARIATES), "statsmodels_s": ref_seconds}
    seconds, frame, cost = in_process(paths, args.repeat)
    report.update(
        {
            "in_process_best_s": min(seconds),
            "in_process_median_s": statistics.median(seconds),
            "iterations": frame.attrs["iterations"],
            **cost,
            **check(frame, fit, "in process"),
        }
    )
    if not args.in_process:
        seconds, frame = over_agents(paths, args.repeat)
        check(frame, fit, "agents")
        report.update({"agents_best_s": min(seconds), "agents_median_s": statistics.median(seconds)})
        report["agents_vs_statsmodels"] = report["agents_best_s"] / ref_seconds
        report["target_5s_met"] = report["agents_median_s"] <= 5.0
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
