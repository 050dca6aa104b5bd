"""A site's data engine: its declared tables, opened in an embedded DuckDB database.

Parquet files are attached as views (DuckDB scans them in place, in parallel, without
copying); CSV files are loaded once into tables, because re-parsing text for every query
would dominate the local step. The database is in-memory and read-only to queries: the
planner's local SQL is the only thing that runs against it.

A compute member that holds no data serves the consortium schema's tables empty
(:func:`empty_tables`): the same local SQL runs there and yields the inputs' fill values
(zero counts and sums, "no value" for extremes), so it contributes nothing to pooled results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb

from ..config import TableSource
from ..errors import ConfigError
from ..query.catalog import Schema

DUCKDB_TYPES = {
    "integer": "BIGINT",
    "float": "DOUBLE",
    "text": "VARCHAR",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}
"""The DuckDB column type of each schema type (for the empty tables of a site without data)."""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def open_tables(tables: Mapping[str, TableSource], threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection serving ``tables`` under their declared names."""
    con = duckdb.connect(":memory:")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    for name, source in tables.items():
        path = _literal(str(source.path))
        try:
            if source.format == "parquet":
                con.execute(f"CREATE VIEW {_quote(name)} AS SELECT * FROM read_parquet({path})")
            else:
                con.execute(f"CREATE TABLE {_quote(name)} AS SELECT * FROM read_csv_auto({path}, header = true)")
            con.execute(f"SELECT * FROM {_quote(name)} LIMIT 0")
        except duckdb.Error as exc:
            raise ConfigError(f"table {name!r} ({source.path}): {exc}") from exc
    return con


def empty_tables(schema: Schema, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection serving every table of the consortium ``schema`` with
    its declared columns and types and no rows: the data of a compute member without data."""
    con = duckdb.connect(":memory:")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    for table in schema.tables.values():
        columns = ", ".join(f"{_quote(c.name)} {DUCKDB_TYPES[c.dtype]}" for c in table.columns.values())
        con.execute(f"CREATE TABLE {_quote(table.name)} ({columns})")
    return con


def columns_of(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """Table -> {column: DuckDB type}: the schema, without touching the data."""
    out: dict[str, dict[str, str]] = {}
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    for table, column, dtype in rows:
        out.setdefault(table, {})[column] = str(dtype)
    return out


def describe(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """Table -> {"columns": {name: type}, "rows": count}: for the site's own ``check`` only
    (row counts are site subtotals and never leave the site)."""
    out: dict[str, dict[str, Any]] = {}
    for table, columns in columns_of(con).items():
        count = con.execute(f"SELECT COUNT(*) FROM {_quote(table)}").fetchone()
        out[table] = {"columns": columns, "rows": int(count[0]) if count else 0}
    return out
