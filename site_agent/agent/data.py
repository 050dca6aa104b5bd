"""A site's data: the tables its ``agent.toml`` declares, opened in their engines.

The engines are ``site_agent/data`` connectors: the embedded DuckDB for CSV, Parquet and DuckDB
files, push-down to a database server (PostgreSQL) for a ``source`` URL, each table presented
under the consortium's names and codes.

A compute member that holds no data serves the consortium schema's tables empty
(:func:`empty_tables`): the same local SQL runs there and yields the inputs' fill values
(zero counts and sums, "no value" for extremes), so it contributes nothing to pooled results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import TableSource
from ..data import Connector, DuckDBConnector, empty_connector, open_sources
from ..data.connector import quote
from ..data.embedded import DUCKDB_TYPES
from ..query.catalog import Schema

__all__ = ["DUCKDB_TYPES", "columns_of", "describe", "empty_tables", "open_tables"]


def open_tables(tables: Mapping[str, TableSource], threads: int | None = None) -> Connector:
    """A connector serving ``tables`` under their declared (consortium) names."""
    return open_sources(tables, threads)


def empty_tables(schema: Schema, threads: int | None = None) -> DuckDBConnector:
    """An in-memory DuckDB serving every table of the consortium ``schema`` with its declared
    columns and types and no rows: the data of a compute member without data."""
    tables = {t.name: {c.name: c.dtype for c in t.stored.values()} for t in schema.tables.values()}
    return empty_connector(tables, threads)


def columns_of(con: Connector) -> dict[str, dict[str, str]]:
    """Table -> {column: engine type}: the schema, without touching the data."""
    return con.columns()


def describe(con: Connector) -> dict[str, dict[str, Any]]:
    """Table -> {"columns": {name: type}, "rows": count}: for the site's own ``check`` only
    (row counts are site subtotals and never leave the site)."""
    out: dict[str, dict[str, Any]] = {}
    for table, columns in columns_of(con).items():
        count = con.execute(f"SELECT COUNT(*) AS n FROM {quote(table)}").fetchnumpy()["n"]
        out[table] = {"columns": columns, "rows": int(count[0]) if len(count) else 0}
    return out
