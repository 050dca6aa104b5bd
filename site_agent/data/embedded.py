"""DuckDB, the embedded default engine: files scanned in place, and empty tables.

Parquet files are attached as views (DuckDB scans them in place, in parallel, without copying);
CSV files are loaded once into tables, because re-parsing text for every query would dominate
the local step; DuckDB database files are attached read-only. The raw sources live in the
schema ``source``; the consortium's tables are views in ``main`` over them (``mapping``), so the
plan's local SQL sees only the consortium's names. The database is in-memory; the planner's
local SQL is the only thing that runs against it.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
from sqlglot import exp

from ..config import TableSource
from ..errors import ConfigError
from .connector import quote
from .mapping import presenting_select

DUCKDB_TYPES = {
    "integer": "BIGINT",
    "float": "DOUBLE",
    "text": "VARCHAR",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}
"""The DuckDB column type of each schema type (for the empty tables of a site without data)."""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DuckDBConnector:
    """A DuckDB connection as a :class:`~site_agent.data.connector.Connector`; ``execute``
    returns DuckDB's own result, whose ``fetchnumpy`` the query path reads."""

    dialect = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def execute(self, sql: str) -> duckdb.DuckDBPyConnection:
        return self.con.execute(sql)

    def cursor(self) -> DuckDBConnector:
        return DuckDBConnector(self.con.cursor())

    def columns(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        rows = self.con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_catalog = current_database() "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
        for table, column, dtype in rows:
            out.setdefault(table, {})[column] = str(dtype)
        return out

    def close(self) -> None:
        self.con.close()


def _connect(threads: int | None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _raw(con: duckdb.DuckDBPyConnection, index: int, source: TableSource) -> exp.Table:
    """Make ``source``'s data reachable in ``con``; the table to select from."""
    if source.path is None:
        raise source.error("path", "not a file", "give the path of a CSV, Parquet or DuckDB file")
    path = _literal(str(source.path))
    raw = exp.table_("t" + str(index), db="source")
    if source.format == "parquet":
        con.execute(f"CREATE VIEW source.{raw.name} AS SELECT * FROM read_parquet({path})")
    elif source.format == "csv":
        con.execute(f"CREATE TABLE source.{raw.name} AS SELECT * FROM read_csv_auto({path}, header = true)")
    else:
        catalog = f"file{index}"
        con.execute(f"ATTACH {path} AS {catalog} (READ_ONLY)")
        raw = exp.to_table(source.local_table, dialect="duckdb")
        raw.set("catalog", exp.to_identifier(catalog))
        if not raw.args.get("db"):
            raw.set("db", exp.to_identifier("main"))
    return raw


def open_files(tables: Mapping[str, TableSource], threads: int | None = None) -> DuckDBConnector:
    """An in-memory DuckDB serving file-backed ``tables`` under their consortium names."""
    con = _connect(threads)
    con.execute("CREATE SCHEMA source")
    for index, (name, source) in enumerate(tables.items()):
        try:
            raw = _raw(con, index, source)
            described = con.execute(f"DESCRIBE SELECT * FROM {raw.sql('duckdb')}").fetchall()
            local = [str(row[0]) for row in described]
            # Nanosecond timestamps (pandas' default, in Parquet files) become microsecond ones:
            # DuckDB 2.0's EXTRACT on TIMESTAMP_NS gives wrong answers in filters.
            casts = {str(row[0]): "timestamp" for row in described if str(row[1]).startswith("TIMESTAMP_NS")}
            view = presenting_select(source, raw, local, casts)
            con.execute(f"CREATE VIEW main.{quote(name)} AS {view.sql('duckdb')}")
            con.execute(f"SELECT * FROM main.{quote(name)} LIMIT 0")
        except duckdb.Error as exc:
            con.close()
            key = "table" if source.format == "duckdb" and "Table" in str(exc) else "path"
            problem = f"cannot read {source.describe()}: {exc}"
            raise source.error(key, problem, "check the file and its format") from None
        except ConfigError:
            con.close()
            raise
    return DuckDBConnector(con)


def empty_connector(tables: Mapping[str, Mapping[str, str]], threads: int | None = None) -> DuckDBConnector:
    """An in-memory DuckDB serving each of ``tables`` (name -> {column: schema type}) with no
    rows: the data of a compute member that holds none."""
    con = _connect(threads)
    for name, columns in tables.items():
        spec = ", ".join(f"{quote(c)} {DUCKDB_TYPES[t]}" for c, t in columns.items())
        con.execute(f"CREATE TABLE {quote(name)} ({spec})")
    return DuckDBConnector(con)
