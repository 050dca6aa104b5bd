"""Cox benchmark: COX with 5 covariates on three sites x N rows, beside statsmodels' PHReg.

    python benchmarks/cox.py [--rows 100000] [--repeat 3] [--in-process] [--json]

Each site's rows (``x1`` ... ``x5`` standard normal clipped to [-4, 4], follow-up in whole
days on [1, 1000], exponential event times with known log hazard ratios and uniform censoring)
are generated from a seed and cached as Parquet under ``--cache``. The schema declares the
grids COX needs: ``time`` on [0, 1000] by 1 day (1,001 bins) and each covariate's bounds. With
N rows per site a day holds about 3N/1000 tied events, beyond EFRON's 6, so the statement is
``TIES BRESLOW`` and statsmodels' ``PHReg(ties="breslow")`` on the pooled rows is the reference
(and the time of a central data warehouse). Over agents (the default) a local consortium of
three ``mpc-site-agent serve`` processes is built in a temporary folder as in
``benchmarks/models.py``; ``Consortium.query()`` is timed until the summary is back (best and
median of ``--repeat`` runs after one warm-up). Every answer is checked against statsmodels
(coefficients and standard errors to 1e-5 relative) and the concordance against lifelines'
``concordance_index`` at statsmodels' coefficients (to 1e-3: the risk grid's binning, see
docs/models.md); a mismatch stops the benchmark. In process, VALIDATE COX of the true
coefficients on the same rows is timed too, its C checked against lifelines' likewise.

Target (issue 11): COX, 5 covariates, 3 sites x 100,000 rows over agents <= 10 s.
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
from lifelines.utils import concordance_index

from site_agent.query.catalog import schema_from_duckdb

SITES = ("north", "central", "south")
SEED = 20261207
COVARIATES = [f"x{j}" for j in range(1, 6)]
TRUE = np.array([0.5, -0.3, 0.2, 0.0, 0.4])
BOUND = 4.0
STATEMENT = f"COX time, event ~ {' + '.join(COVARIATES)} FROM cohort TIES BRESLOW"
SCORE = " + ".join(f"{float(b)!r}*{c}" for b, c in zip(TRUE, COVARIATES, strict=True))
VALIDATE = f"VALIDATE COX time, event ~ {SCORE} FROM cohort"
GRIDS = {"cohort.time": (0.0, 1000.0, 1.0), **{f"cohort.{c}": (-BOUND, BOUND, 0.001) for c in COVARIATES}}
SCHEMA_TOML = (
    "[tables.cohort]\n"
    + 'time = { type = "float", grid = [0, 1000, 1] }\nevent = "integer"\n'
    + "".join(f'{c} = {{ type = "float", grid = [{-BOUND}, {BOUND}, 0.001] }}\n' for c in COVARIATES)
)


def site_files(cache: Path, rows: int) -> list[Path]:
    folder = cache / f"cox-{rows}-{SEED}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{site}.parquet" for site in SITES]
    for k, path in enumerate(paths):
        if not path.exists():
            rng = np.random.default_rng([SEED, k])
            x = np.clip(rng.standard_normal((rows, len(COVARIATES))), -BOUND, BOUND)
            hazard = np.exp(x @ TRUE) / 400.0
            t_event = rng.exponential(1.0 / hazard)
            t_censor = rng.uniform(1.0, 1000.0, rows)
            time_ = np.clip(np.ceil(np.minimum(t_event, t_censor)), 1, 1000)
            frame = pd.DataFrame(x, columns=COVARIATES).assign(time=time_, event=(t_event <= t_censor).astype(np.int64))
            tmp = path.with_suffix(".tmp")
            con = duckdb.connect()
            con.register("frame", frame)
            con.execute(f"COPY frame TO '{tmp}' (FORMAT parquet)")
            con.close()
            tmp.rename(path)
    return paths


def reference(paths: list[Path]) -> tuple[float, Any, float, float]:
    """statsmodels' seconds and fit, and lifelines' concordance index at its coefficients and at
    the true ones (VALIDATE COX's score)."""
    pooled = pd.concat([duckdb.read_parquet(str(p)).df() for p in paths], ignore_index=True)
    started = time.perf_counter()
    model = sm.PHReg(pooled["time"], pooled[COVARIATES], status=pooled["event"], ties="breslow")
    fit = model.fit(tol=1e-10)
    seconds = time.perf_counter() - started
    covariates = pooled[COVARIATES].to_numpy()
    fitted = concordance_index(pooled["time"], -(covariates @ fit.params), pooled["event"])
    return seconds, fit, fitted, concordance_index(pooled["time"], -(covariates @ TRUE), pooled["event"])


def check(frame: pd.DataFrame, fit: Any, c_index: float, where: str) -> dict[str, float]:
    coef = float(np.max(np.abs(frame["coef"].to_numpy() - fit.params) / np.abs(fit.params)))
    se = float(np.max(np.abs(frame["se(coef)"].to_numpy() - fit.bse) / fit.bse))
    c_err = abs(frame.attrs["concordance"] - c_index)
    if coef > 1e-5 or se > 1e-5 or c_err > 1e-3:
        raise SystemExit(f"{where}: differs (coef {coef:.2e}, se {se:.2e} relative; concordance {c_err:.2e})")
    return {"coef_rel_err": coef, "se_rel_err": se, "concordance_err": c_err}


def in_process(paths: list[Path], repeat: int) -> tuple[list[float], pd.DataFrame, dict[str, Any]]:
    seconds, frame = harness.in_process(
        SITES, paths, "cohort", STATEMENT, lambda con: schema_from_duckdb(con, grids=GRIDS), repeat
    )
    return seconds, frame, {"rounds": frame.attrs["rounds"], "bytes": frame.attrs["bytes"]}


def over_agents(paths: list[Path], repeat: int) -> tuple[list[float], pd.DataFrame]:
    return harness.over_agents(SITES, paths, "cohort", STATEMENT, SCHEMA_TOML, repeat)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per site")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="skip the agents")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mpc-jupyter-bench")
    args = parser.parse_args(argv)
    paths = site_files(args.cache, args.rows)
    ref_seconds, fit, c_index, c_true = reference(paths)
    report: dict[str, Any] = {"rows_per_site": args.rows, "covariates": len(COVARIATES), "statsmodels_s": ref_seconds}
    seconds, frame, cost = in_process(paths, args.repeat)
    report.update(
        {
            "in_process_best_s": min(seconds),
            "in_process_median_s": statistics.median(seconds),
            "iterations": frame.attrs["iterations"],
            "events": frame.attrs["events"],
            **cost,
            **check(frame, fit, c_index, "in process"),
        }
    )
    seconds, frame = harness.in_process(
        SITES, paths, "cohort", VALIDATE, lambda con: schema_from_duckdb(con, grids=GRIDS), args.repeat
    )
    report["validate_in_process_best_s"] = min(seconds)
    report["validate_concordance_err"] = abs(float(frame.loc["all", "concordance"]) - c_true)
    if report["validate_concordance_err"] > 1e-3:
        raise SystemExit(f"VALIDATE COX differs from lifelines by {report['validate_concordance_err']:.2e}")
    if not args.in_process:
        seconds, frame = over_agents(paths, args.repeat)
        check(frame, fit, c_index, "agents")
        report.update({"agents_best_s": min(seconds), "agents_median_s": statistics.median(seconds)})
        report["agents_vs_statsmodels"] = report["agents_best_s"] / ref_seconds
        report["target_10s_met"] = report["agents_median_s"] <= 10.0
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
