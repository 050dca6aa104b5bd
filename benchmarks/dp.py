"""DP mode's cost beside the same exact query, in process (local SQL, sharing, MPC, reconstruction).

    python benchmarks/dp.py [--rows 1000000] [--repeat 5] [--agents]

Three sites of ``--rows`` patients each (a person column, sex, ward, a bounded blood pressure) in
in-memory DuckDB; the same GROUP BY two keys with COUNT and AVG compiled exactly (the release
rule: query-set checks, secondary suppression, divisions on shares) and in DP mode (rows bounded
per person with a window, values clipped, the members' Skellam noise added on shares, the
division by the analyst). ``site_agent.query.execute`` times each phase; the best of
``--repeat`` runs is reported, and DP / exact. ``--agents`` also times both over three agent
processes (mutual TLS on loopback, ``Consortium.query`` with and without ``epsilon=1``, the
demo's default policy: a budget of 10 per analyst, so at most 8 repeats), best and median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

from site_agent.query import DisclosureRules, compile_query, execute
from site_agent.query.dp import DpRequest
from site_agent.query.schema_file import load_schema_file

SCHEMA = """[tables.patients]
pid = { type = "integer", person = true }
sex = { type = "text", domain = ["F", "M"] }
ward = { type = "text", domain = ["cardio", "icu", "onco", "surgery"] }
sbp = { type = "float", bounds = [60, 260] }
"""
QUERY = "SELECT sex, ward, COUNT(*) AS n, AVG(sbp) AS mean_sbp FROM patients GROUP BY sex, ward"
SITES = ("north", "central", "south")


def sites(rows: int) -> dict[str, duckdb.DuckDBPyConnection]:
    out = {}
    for k, name in enumerate(SITES):
        rng = np.random.default_rng([20261207, k])
        frame = pd.DataFrame(
            {
                "pid": np.arange(rows) + k * rows,
                "sex": rng.choice(["F", "M"], rows),
                "ward": rng.choice(["cardio", "icu", "onco", "surgery"], rows),
                "sbp": rng.normal(130, 15, rows),
            }
        )
        con = duckdb.connect()
        con.register("incoming", frame)
        con.execute("CREATE TABLE patients AS SELECT * FROM incoming")
        con.unregister("incoming")
        out[name] = con
    return out


def best(plan: object, cons: dict[str, duckdb.DuckDBPyConnection], repeat: int) -> dict[str, float]:
    runs = [execute(plan, cons).attrs["seconds"] for _ in range(repeat)]  # type: ignore[arg-type]
    return {phase: min(r[phase] for r in runs) for phase in ("local", "mpc", "total")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per site")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--agents", action="store_true", help="also over three agent processes")
    args = parser.parse_args()
    path = Path(tempfile.mkdtemp()) / "schema.toml"
    path.write_text(SCHEMA)
    schema = load_schema_file(path)
    cons = sites(args.rows)
    exact = compile_query(QUERY, schema, DisclosureRules(), tuple(cons))
    dp = compile_query(QUERY, schema, DisclosureRules(), tuple(cons), DpRequest(1.0))
    execute(exact, cons), execute(dp, cons)  # warm up
    result = {"rows_per_site": args.rows, "exact": best(exact, cons, args.repeat), "dp": best(dp, cons, args.repeat)}
    result["dp_vs_exact_total"] = result["dp"]["total"] / result["exact"]["total"]
    if args.agents:
        result["agents"] = over_agents(cons, args.repeat)
    print(json.dumps(result, indent=2))


def over_agents(cons: dict[str, duckdb.DuckDBPyConnection], repeat: int) -> dict[str, float]:
    """The exact and the DP query through three agents serving the same rows (Parquet files)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{site}.parquet" for site in SITES]
        for site, path in zip(SITES, paths, strict=True):
            cons[site].execute(f"COPY patients TO '{path}' (FORMAT PARQUET)")
        with harness.agents(SITES, paths, "patients", SCHEMA) as client:
            client.query(QUERY), client.query(QUERY, epsilon=1.0)  # warm-up
            exact, _ = harness.timed(lambda: client.query(QUERY), repeat)
            dp, _ = harness.timed(lambda: client.query(QUERY, epsilon=1.0), repeat)
    out = {"exact_best_s": min(exact), "exact_median_s": statistics.median(exact)}
    out |= {"dp_best_s": min(dp), "dp_median_s": statistics.median(dp)}
    out["dp_vs_exact_median"] = out["dp_median_s"] / out["exact_median_s"]
    return out


if __name__ == "__main__":
    main()
