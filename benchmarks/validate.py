"""VALIDATE benchmark: the AUC (and the other metrics) of a logistic model on three sites x N rows.

    python benchmarks/validate.py [--rows 1000000] [--repeat 3] [--in-process] [--json] [--without-calibration]

The rows are those of ``benchmarks/models.py`` (``x1`` ... ``x10`` standard normal, ``y`` from
a logistic model with known coefficients, cached as Parquet); the statement validates that true
model on them with the grid ``-8 TO 8 STEP 0.0001``. Timed in process
(``site_agent.models.statement.execute``) and, unless ``--in-process``, over three agents with
mutual TLS (``Consortium.query()``, best and median of ``--repeat`` after one warm-up). Every
answer is checked against scipy on the pooled rows: the AUC equals the Mann-Whitney U / (P N) of
the scores rounded to the grid to 1e-8 (the division's 7.5e-9), the Brier score numpy's to 1e-7 relative, the
calibration slope statsmodels' to 1e-6; ``grid_auc_error`` reports how far the grid's AUC is
from the AUC of the unrounded float scores.

``--trees N`` validates instead a scikit-learn GradientBoostingClassifier of N trees of depth 3
(trained on 50,000 pooled rows, leaves of at least 1,000) as ``TREES(:model)``, checked the same
way against its own ``decision_function`` on the pooled rows.

Target (issue 11): VALIDATE (AUC) on 3 x 1,000,000 rows over agents <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.stats import mannwhitneyu

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
from models import COVARIATES, SCHEMA_TOML, SITES, TRUE, site_files

from site_agent.query.catalog import schema_from_duckdb

LO, HI, STEP = -8.0, 8.0, 1e-4
TERMS = " + ".join(f"{float(b)!r}*{c}" for b, c in zip(TRUE[1:], COVARIATES, strict=True) if b != 0)
STATEMENT = f"VALIDATE LOGISTIC y ~ {float(TRUE[0])!r} + {TERMS} FROM cohort GRID {LO} TO {HI} STEP {STEP}"
TREES_STATEMENT = f"VALIDATE LOGISTIC y ~ TREES(:model) FROM cohort GRID {LO} TO {HI} STEP {STEP}"


def pooled_rows(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([duckdb.read_parquet(str(p)).df() for p in paths], ignore_index=True)


def boosting(pooled: pd.DataFrame, trees: int) -> Any:
    """A gradient-boosting model of ``trees`` trees trained on 50,000 of the pooled rows."""
    from sklearn.ensemble import GradientBoostingClassifier

    sample = pooled.sample(50_000, random_state=0)
    model = GradientBoostingClassifier(n_estimators=trees, max_depth=3, min_samples_leaf=1_000, random_state=0)
    return model.fit(sample[COVARIATES].to_numpy(), sample["y"].to_numpy().astype(int))


def reference(pooled: pd.DataFrame, model: Any = None) -> dict[str, float]:
    y = pooled["y"].to_numpy()
    if model is None:
        eta = TRUE[0] + pooled[COVARIATES].to_numpy() @ TRUE[1:]
    else:
        eta = model.decision_function(pooled[COVARIATES].to_numpy())
    p = 1 / (1 + np.exp(-eta))
    binned = np.clip(np.rint((eta - LO) / STEP), 0, round((HI - LO) / STEP))
    pn = y.sum() * (1 - y).sum()
    return {
        "auc_grid": mannwhitneyu(binned[y == 1], binned[y == 0]).statistic / pn,
        "auc_float": mannwhitneyu(eta[y == 1], eta[y == 0]).statistic / pn,
        "brier": float(np.mean((y - p) ** 2)),
        "cal_slope": float(sm.Logit(y, sm.add_constant(eta)).fit(disp=0, tol=1e-10).params[1]),
    }


def check(frame: pd.DataFrame, ref: dict[str, float], where: str) -> dict[str, float]:
    row = frame.loc["all"]
    auc = abs(row["auc"] - ref["auc_grid"])
    brier = abs(row["brier"] - ref["brier"]) / ref["brier"]
    slope = 0.0 if np.isnan(row["cal_slope"]) else abs(row["cal_slope"] - ref["cal_slope"]) / abs(ref["cal_slope"])
    if auc > 1e-8 or brier > 1e-7 or slope > 1e-6:
        raise SystemExit(f"{where}: differs from the reference (auc {auc:.2e}, brier {brier:.2e}, slope {slope:.2e})")
    return {
        "auc_err": auc,
        "brier_rel_err": brier,
        "slope_rel_err": slope,
        "grid_auc_error": row["auc"] - ref["auc_float"],
    }


def in_process(paths: list[Path], repeat: int, statement: str, params: Any) -> tuple[list[float], pd.DataFrame]:
    return harness.in_process(SITES, paths, "cohort", statement, schema_from_duckdb, repeat, params)


def over_agents(paths: list[Path], repeat: int, statement: str, params: Any) -> tuple[list[float], pd.DataFrame]:
    return harness.over_agents(SITES, paths, "cohort", statement, SCHEMA_TOML, repeat, params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per site")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="skip the agents")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--without-calibration", action="store_true", help="no calibration fit")
    parser.add_argument("--trees", type=int, default=0, help="validate a gradient-boosting model of this many trees")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mpc-jupyter-bench")
    args = parser.parse_args(argv)
    paths = site_files(args.cache, args.rows)
    pooled = pooled_rows(paths)
    model = boosting(pooled, args.trees) if args.trees else None
    ref = reference(pooled, model)
    statement = STATEMENT if model is None else TREES_STATEMENT
    statement += " WITHOUT CALIBRATION" if args.without_calibration else ""
    params = None
    if model is not None:
        from mpc_jupyter.models import export_sklearn

        params = {"model": export_sklearn(model, COVARIATES)}
    seconds, frame = in_process(paths, args.repeat, statement, params)
    report: dict[str, Any] = {
        "rows_per_site": args.rows,
        "grid_points": round((HI - LO) / STEP) + 1,
        "in_process_best_s": min(seconds),
        "in_process_median_s": statistics.median(seconds),
        "rounds": frame.attrs["rounds"],
        "bytes": frame.attrs["bytes"],
        **check(frame, ref, "in process"),
    }
    if not args.in_process:
        seconds, frame = over_agents(paths, args.repeat, statement, params)
        check(frame, ref, "agents")
        report.update({"agents_best_s": min(seconds), "agents_median_s": statistics.median(seconds)})
        report["target_5s_met"] = report["agents_median_s"] <= 5.0
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        for key, value in report.items():
            print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
