"""Accuracy of a DP count: the calibrated noise, its chance of staying within +-1% of 1,000, and
what the calibration on Agarwal et al.'s RDP bound alone (before the exact divergence) gave.

    python benchmarks/dp_accuracy.py [--runs 2000]

Per (epsilon, delta): the honest pair's variance V the planner calibrates a count (one row per
person) to, the sd of the released noise (three members' samples, Sk(1.5 V)), P(|noise| <= 10)
and the exact delta at epsilon of Sk(V) against Sk(V) + 1 (both from scipy's Skellam pmf, the
hockey-stick divergence summed both ways), the same for the bound-only calibration, and the time
one calibration takes. Then ``--runs`` end-to-end runs in process (``site_agent.query.execute``:
three DuckDB sites of 400 + 400 + 200 persons, ``COUNT(*)`` at epsilon 1, delta 1e-5): the share
within +-10. And how many queries at 0.5 and at 1 fit a budget of 3 and of 10 (RDP composition).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
from scipy import stats

from site_agent.privacy import skellam
from site_agent.privacy.skellam import Sensitivity
from site_agent.query import DisclosureRules, compile_query, execute
from site_agent.query.dp import DpRequest
from site_agent.query.schema_file import load_schema_file

COUNT = Sensitivity(1, 1, one_cell=True)
BOUND_ONLY = Sensitivity(1, 1)  # one_cell unknown: Agarwal et al.'s bound, the former calibration


def within_ten(variance: float) -> float:
    mu = 0.75 * variance  # Sk(1.5 V): Poisson(0.75 V) - Poisson(0.75 V)
    return float(stats.skellam.cdf(10, mu, mu) - stats.skellam.cdf(-11, mu, mu))


def exact_delta(variance: float, eps: float) -> float:
    x = np.arange(-20_000, 20_001)
    p, q = stats.skellam.pmf(x, variance / 2, variance / 2), stats.skellam.pmf(x - 1, variance / 2, variance / 2)
    return float(max(np.sum(np.maximum(0, p - math.exp(eps) * q)), np.sum(np.maximum(0, q - math.exp(eps) * p))))


def calibration(eps: float, delta: float) -> dict[str, float]:
    started = time.perf_counter()
    (new,) = skellam.calibrate([COUNT], eps, delta)
    seconds = time.perf_counter() - started
    (old,) = skellam.calibrate([BOUND_ONLY], eps, delta)
    return {
        "epsilon": eps,
        "delta": delta,
        "variance": new,
        "released_sd": skellam.released_sd(new),
        "within_1pct_of_1000": within_ten(new),
        "exact_delta": exact_delta(new, eps),
        "bound_only_variance": old,
        "bound_only_released_sd": skellam.released_sd(old),
        "bound_only_within_1pct_of_1000": within_ten(old),
        "calibration_ms": 1000 * seconds,
    }


def end_to_end(runs: int) -> float:
    folder = Path(tempfile.mkdtemp())
    (folder / "schema.toml").write_text('[tables.p]\npid = { type = "integer", person = true }\n')
    cons = {}
    for i, (site, n) in enumerate((("a", 400), ("b", 400), ("c", 200))):
        con = duckdb.connect()
        con.execute(f"CREATE TABLE p AS SELECT range + {i * 400} AS pid FROM range({n})")
        cons[site] = con
    plan = compile_query(
        "SELECT COUNT(*) AS n FROM p",
        load_schema_file(folder / "schema.toml"),
        DisclosureRules(),
        tuple(cons),
        DpRequest(1.0, 1e-5, 1),
    )
    counts = np.array([execute(plan, cons)["n"][0] for _ in range(runs)])
    return float(np.mean(np.abs(counts - 1000) <= 10))


def queries_in(budget: float, eps: float, sens: Sensitivity, delta: float = 1e-5) -> int:
    curve = skellam.query_rdp(skellam.calibrate([sens], eps, delta), [sens])
    n = 0
    while skellam.epsilon((n + 1) * curve, delta) <= budget:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    figures = {
        "calibrations": [calibration(e, d) for d in (1e-5, 1e-6) for e in (0.5, 1.0, 2.0)],
        "end_to_end_runs": args.runs,
        "end_to_end_within_1pct": end_to_end(args.runs),
        "queries_at_0.5_in_3": queries_in(3.0, 0.5, COUNT),
        "bound_only_queries_at_0.5_in_3": queries_in(3.0, 0.5, BOUND_ONLY),
        "queries_at_1_in_10": queries_in(10.0, 1.0, COUNT),
        "bound_only_queries_at_1_in_10": queries_in(10.0, 1.0, BOUND_ONLY),
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
