"""The plan's local SQL, transpiled, gives PostgreSQL the same numbers as DuckDB.

Every example of docs/query-language.md is compiled by the real planner; each local statement
runs in DuckDB on one site's rows and in a real PostgreSQL server holding the same rows (through
the push-down connector), and the fetched columns are compared. Constructs with different
semantics in the two engines (ROUND ties, TRY_CAST, date arithmetic, integer division) are
checked row by row on edge values.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from site_agent.config import TableSource
from site_agent.data import SqlConnector, open_server
from site_agent.errors import QueryError
from site_agent.query import compile_query, execute
from site_agent.query.execute import _column, local_preaggregates
from tests.query.test_docs import BLOCKS, DOC, SQL

from .pgserver import PostgresServer

PG_TYPES = {"BIGINT": "bigint", "INTEGER": "integer", "DOUBLE": "double precision", "VARCHAR": "text",
            "BOOLEAN": "boolean", "DATE": "date", "TIMESTAMP_NS": "timestamp", "TIMESTAMP": "timestamp"}  # fmt: skip


def copy_table(server: PostgresServer, con: duckdb.DuckDBPyConnection, table: str, as_name: str) -> None:
    """The rows of a DuckDB table, copied into the PostgreSQL server."""
    described = con.execute(f"DESCRIBE {table}").fetchall()
    columns = {row[0]: PG_TYPES[row[1]] for row in described}
    server.load(as_name, columns, con.execute(f"SELECT * FROM {table}").fetchall())


@pytest.fixture(scope="module")
def docs() -> dict[str, Any]:
    (code,) = [body for lang, body in BLOCKS if lang == "python"]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def north_duck(docs: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """North's tables in DuckDB with microsecond timestamps, the reference: DuckDB 2.0 gets
    ``EXTRACT(year FROM <TIMESTAMP_NS>) < 2020`` wrong (0 rows; pandas and PostgreSQL agree on
    548), and the docs' tables come from pandas with nanosecond timestamps."""
    con = duckdb.connect()
    for table in ("patients", "labs"):
        con.register("incoming", docs["sites"]["north"].execute(f"SELECT * FROM {table}").df())
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM incoming")
        con.unregister("incoming")
        for column, dtype, *_ in con.execute(f"DESCRIBE {table}").fetchall():
            if dtype == "TIMESTAMP_NS":
                con.execute(f"ALTER TABLE {table} ALTER {column} TYPE TIMESTAMP")
    return con


@pytest.fixture(scope="module")
def north_pg(postgres: PostgresServer, docs: dict[str, Any]) -> SqlConnector:
    """North's tables in PostgreSQL, served by the push-down connector."""
    for table in ("patients", "labs"):
        copy_table(postgres, docs["sites"]["north"], table, f"north_{table}")
    url = postgres.url()
    connector = open_server({t: TableSource(t, None, "postgresql", url, f"north_{t}") for t in ("patients", "labs")})
    yield connector
    connector.close()


def _sorted(result: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    names = list(result)
    keys = [_column(result, k)[0] for k in ("bin", "cell") if k in names]
    order = np.lexsort(keys) if keys else np.arange(len(next(iter(result.values()))))
    return {n: tuple(a[order] for a in _column(result, n)) for n in names}


@pytest.mark.parametrize("text", SQL, ids=[f"example{i}" for i in range(len(SQL))])
def test_doc_example_local_sql_matches_duckdb(
    docs: dict[str, Any], north_duck: duckdb.DuckDBPyConnection, north_pg: SqlConnector, text: str
) -> None:
    plan = compile_query(text, docs["schema"], docs["rules"], tuple(docs["sites"]))
    duck = north_duck
    for query in plan.data["local"]:
        expected = _sorted(duck.execute(query["sql"]).fetchnumpy())
        got = _sorted(north_pg.execute(query["sql"]).fetchnumpy())
        assert list(got) == list(expected)
        for name, (values, null) in expected.items():
            assert np.array_equal(got[name][1], null), (query["name"], name)
            np.testing.assert_allclose(got[name][0][~null], values[~null], rtol=1e-9, err_msg=f"{query['name']}.{name}")


def test_pg_site_in_a_mixed_consortium_gives_the_all_duckdb_answer(
    docs: dict[str, Any], north_pg: SqlConnector
) -> None:
    text = (
        "SELECT ward, sex, COUNT(*) AS n, AVG(bmi) AS mean_bmi, STDDEV(sbp) AS sd_sbp, MEDIAN(age) AS median_age "
        "FROM patients WHERE admitted >= DATE '2016-01-01' GROUP BY ward, sex"
    )
    plan = compile_query(text, docs["schema"], docs["rules"], tuple(docs["sites"]))
    mixed = execute(plan, {**docs["sites"], "north": north_pg})
    duck = execute(plan, docs["sites"])
    pd.testing.assert_frame_equal(mixed, duck, check_exact=False, rtol=1e-6)
    # and the north pre-aggregates are the same ring vectors up to float summation order
    for name, vec in local_preaggregates(plan, docs["sites"]["north"], "north").items():
        diff = (local_preaggregates(plan, north_pg, "north")[name] - vec).astype(np.int64)
        assert np.abs(diff).max() <= 2**10, name


EDGE = pd.DataFrame(
    {
        "code": ["12", " 7 ", "3.5", "-2.5", "1e3", "abc", None, "2.", "yes", "2023-02-03"],
        "x": [2.5, -2.5, 0.5, 1.5, 12.5, 0.125, None, 0.49999999999999994, -0.5, -7.5],
        "n": [5, 7, -3, 0, 9, 2, None, 11, 4, 1],
        "d0": pd.to_datetime(["2019-12-31", "2020-01-15", "2020-02-29", "2021-06-30", "2018-03-01",
                              "2020-12-31", None, "2000-01-01", "2024-02-29", "2022-07-04"]),
        "d1": pd.to_datetime(["2020-01-01", "2021-01-14", "2021-02-28", "2021-07-01", "2020-02-28",
                              "2021-01-01", "2020-01-01", "2010-12-31", "2025-03-01", "2022-07-04"]),
    }
)  # fmt: skip

EDGE_EXPRESSIONS = [
    "TRY_CAST(code AS INTEGER)",
    "TRY_CAST(code AS BIGINT)",
    "TRY_CAST(code AS DOUBLE)",
    "TRY_CAST(code AS BOOLEAN)",
    "TRY_CAST(code AS DATE)",
    "TRY_CAST(code AS VARCHAR)",
    "TRY_CAST(n AS DOUBLE)",
    "CAST(n AS DOUBLE) / 4",
    "n / 4",
    "ROUND(x)",
    "ROUND(x, 2)",
    "CAST(ROUND((LEAST(GREATEST(x, 0), 10) - 0) / 5) AS BIGINT)",
    "CAST(ROUND((LEAST(GREATEST(n, 0), 10) - 0) / 2) AS BIGINT)",
    "FLOOR(x)", "CEIL(x)", "ABS(x)", "COALESCE(x, -1)",
    "LENGTH(code)", "LOWER(code)", "UPPER(code)", "SUBSTRING(code, 1, 2)", "code LIKE '%e%'", "code ILIKE 'A%'",
    "date_diff('day', d0, d1)", "date_diff('month', d0, d1)", "date_diff('year', d0, d1)",
    "date_trunc('month', d0)", "date_trunc('year', d1)",
    "EXTRACT(YEAR FROM d0)", "EXTRACT(MONTH FROM d0)", "year(d1)", "month(d1)", "day(d1)",
    "d1 - INTERVAL 7 DAY > d0",
    "CURRENT_DATE > d0",
    "CASE WHEN n < 3 THEN 'low' WHEN n < 8 THEN 'mid' ELSE 'high' END",
]  # fmt: skip


@pytest.fixture(scope="module")
def edge(postgres: PostgresServer) -> tuple[duckdb.DuckDBPyConnection, SqlConnector]:
    con = duckdb.connect()
    con.register("incoming", EDGE)
    con.execute("CREATE TABLE edge AS SELECT code, x, CAST(n AS BIGINT) AS n, CAST(d0 AS DATE) AS d0, "
                "CAST(d1 AS TIMESTAMP) AS d1 FROM incoming")  # fmt: skip
    copy_table(postgres, con, "edge", "edge")
    pg = open_server({"edge": TableSource("edge", None, "postgresql", postgres.url(), "edge")})
    yield con, pg
    pg.close()
    con.close()


def _normal(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@pytest.mark.parametrize("expression", EDGE_EXPRESSIONS)
def test_edge_values_match_row_by_row(edge: tuple[duckdb.DuckDBPyConnection, SqlConnector], expression: str) -> None:
    duck, pg = edge
    sql = f"SELECT {expression} AS v FROM edge ORDER BY n NULLS FIRST, code NULLS FIRST"
    expected = [_normal(v) for v in duck.execute(sql).fetchnumpy()["v"].tolist()]
    got = [_normal(v) for v in pg.execute(sql).fetchnumpy()["v"].tolist()]
    assert got == expected, pg.translate(sql)


def test_try_cast_to_an_unguarded_type_is_refused_by_name(edge: tuple[duckdb.DuckDBPyConnection, SqlConnector]) -> None:
    with pytest.raises(QueryError, match="TRY_CAST to INTERVAL"):
        edge[1].execute("SELECT TRY_CAST(code AS INTERVAL) AS v FROM edge")
