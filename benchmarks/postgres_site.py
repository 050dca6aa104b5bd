"""One site in PostgreSQL: the GROUP BY query with push-down beside the all-DuckDB consortium.

    python benchmarks/postgres_site.py [--rows 1000000] [--repeat 5] [--json]

The three sites' Parquet files of ``queries.py`` (same seed, same cache); the first site's rows
are also loaded into a throw-away PostgreSQL server (``tests/data/pgserver.py``: initdb in a
temporary folder, loopback only, stopped at the end). The queries of ``queries.py`` run through
the in-process executor twice: every site in DuckDB (``site_agent.data.open_files``, the agent's
own engine), then with the first site in PostgreSQL (``site_agent.data.open_server``: the local
SQL transpiled and run inside the server). Both answers are checked against pandas on the pooled
rows; the report gives the median time of each and the ratio (target: <= 2x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import duckdb
from queries import DEFAULT_CACHE, QUERIES, SCHEMA_TOML, check, pooled_rows, site_files, timed

from site_agent.config import TableSource
from site_agent.data import Connector, open_files, open_server
from site_agent.query import DisclosureRules, compile_query, execute
from site_agent.query.schema_file import load_schema_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.data.pgserver import PostgresServer

PG_TYPES = {"VARCHAR": "text", "BIGINT": "bigint", "DOUBLE": "double precision"}


def measure(rows: int, repeat: int, cache: Path) -> dict[str, Any]:
    paths = site_files(cache, rows)
    pooled = pooled_rows(paths)
    schema_file = paths[0].parent / "schema.toml"
    schema_file.write_text(SCHEMA_TOML)
    schema = load_schema_file(schema_file)
    duck: dict[str, Connector] = {
        path.stem: open_files({"patients": TableSource("patients", path, "parquet")}) for path in paths
    }
    out: dict[str, Any] = {"rows_per_site": rows, "repeat": repeat}
    with PostgresServer() as server:
        src = duckdb.connect()
        described = src.execute(f"DESCRIBE SELECT * FROM read_parquet('{paths[0]}')").fetchall()
        types = {str(r[0]): PG_TYPES[str(r[1])] for r in described}
        server.load("patients", types, src.execute(f"SELECT * FROM read_parquet('{paths[0]}')").fetchall())
        src.close()
        pg = open_server({"patients": TableSource("patients", None, "postgresql", server.url(), "patients")})
        mixed = {**duck, paths[0].stem: pg}
        for name, query in QUERIES.items():
            plan = compile_query(query.sql, schema, DisclosureRules())
            expected = query.pandas(pooled)
            for label, cons in (("duckdb", duck), ("postgres", mixed)):
                execute(plan, cons)  # warm-up (and the server's cache)
                seconds, frame = timed(lambda plan=plan, cons=cons: execute(plan, cons), repeat)  # type: ignore[misc]
                check(name, frame, expected, label)
                out[f"{name}_{label}_median_s"] = statistics.median(seconds)
                local = [execute(plan, cons).attrs["seconds"]["local"] for _ in range(max(1, repeat // 2))]
                out[f"{name}_{label}_local_median_s"] = statistics.median(local)
            out[f"{name}_ratio"] = out[f"{name}_postgres_median_s"] / out[f"{name}_duckdb_median_s"]
        pg.close()
    for con in duck.values():
        con.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per site")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    found = measure(args.rows, args.repeat, args.cache)
    if args.json:
        print(json.dumps(found, indent=2))
        return
    print(f"{args.rows:,} rows per site, one site in PostgreSQL, median of {args.repeat} runs (in-process)")
    print(f"{'query':24} {'all DuckDB':>12} {'1 PostgreSQL':>13} {'ratio':>6}   local step: DuckDB / PostgreSQL")
    for name in QUERIES:
        d, p = found[f"{name}_duckdb_median_s"], found[f"{name}_postgres_median_s"]
        ld, lp = found[f"{name}_duckdb_local_median_s"], found[f"{name}_postgres_local_median_s"]
        print(f"{name:24} {d * 1e3:10.0f}ms {p * 1e3:11.0f}ms {p / d:6.2f}   {ld * 1e3:.0f} ms / {lp * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
