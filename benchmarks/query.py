"""Query path timings: three sites x N rows in DuckDB, call to DataFrame, beside pandas on pooled data.

    python benchmarks/query.py [--rows 1000000] [--json]

Queries: GROUP BY two keys with COUNT, AVG, STDDEV; MEDIAN by group. The MPC runs in process
(``run_in_memory``), so the numbers are local SQL + sharing + protocol computation without the
network; the explain output gives the rounds and bytes a networked run adds.
"""

from __future__ import annotations

import argparse
import json
import time

import duckdb
import numpy as np
import pandas as pd

from site_agent.query import DisclosureRules, compile_query, execute, schema_from_duckdb

QUERIES = {
    "count_avg_std_2keys": "SELECT sex, ward, COUNT(*) AS n, AVG(sbp) AS mean_sbp, STDDEV(sbp) AS sd_sbp "
    "FROM patients GROUP BY sex, ward",
    "median_by_group": "SELECT ward, MEDIAN(age) AS median_age FROM patients GROUP BY ward",
}


def _site(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sex": rng.choice(np.array(["F", "M"]), n),
            "ward": rng.choice(np.array(["cardio", "onco", "icu", "surgery"]), n),
            "age": rng.integers(18, 100, n),
            "sbp": rng.normal(130, 15, n),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    frames = [_site(rng, args.rows) for _ in range(3)]
    cons = {}
    for i, df in enumerate(frames):
        con = duckdb.connect()
        con.register("incoming", df)
        con.execute("CREATE TABLE patients AS SELECT * FROM incoming")
        con.unregister("incoming")
        cons[f"site{i}"] = con
    schema = schema_from_duckdb(
        cons["site0"],
        domains={"patients.sex": ["F", "M"], "patients.ward": ["cardio", "onco", "icu", "surgery"]},
        grids={"patients.age": (0, 120, 1)},
    )
    rules = DisclosureRules()
    pooled = pd.concat(frames, ignore_index=True)
    plain = {
        "count_avg_std_2keys": lambda: pooled.groupby(["sex", "ward"]).sbp.agg(["count", "mean", "std"]),
        "median_by_group": lambda: pooled.groupby("ward").age.median(),
    }
    report = {}
    for name, text in QUERIES.items():
        best, best_plain, attrs = float("inf"), float("inf"), {}
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = execute(compile_query(text, schema, rules), cons)
            best = min(best, time.perf_counter() - t)
            attrs = out.attrs
            t = time.perf_counter()
            plain[name]()
            best_plain = min(best_plain, time.perf_counter() - t)
        report[name] = {
            "mpc_seconds": round(best, 4),
            "local_sql_seconds": round(attrs["seconds"]["local"], 4),
            "mpc_part_seconds": round(attrs["seconds"]["mpc"], 4),
            "pandas_pooled_seconds": round(best_plain, 4),
            "ratio": round(best / best_plain, 1),
            "rounds": attrs["rounds"],
            "bytes": attrs["bytes"],
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"3 sites x {args.rows:,} rows (best of {args.repeat})")
    for name, r in report.items():
        print(
            f"{name:<22} mpc {r['mpc_seconds']:.3f} s (local SQL {r['local_sql_seconds']:.3f}, MPC "
            f"{r['mpc_part_seconds']:.3f}; {r['rounds']} rounds, {r['bytes']:,} B)  "
            f"pandas pooled {r['pandas_pooled_seconds']:.3f} s  ratio {r['ratio']}x"
        )


if __name__ == "__main__":
    main()
