"""What a site's tables hold, column by column, in counts: for drafting and checking a schema.

Everything here runs as aggregate SQL through a :class:`~site_agent.data.connector.Connector`
(so in PostgreSQL by push-down, like the local step); only counts, extremes and the distinct
values of low-cardinality columns come back. It serves the site's own operator and the
consortium's coordinator drafting ``schema.toml`` (``mpc-consortium schema draft``) and the
site's ``mpc-site-agent check``; nothing here is reachable by an analyst.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from .connector import Connector, quote

_TYPE_PATTERNS = (
    (r"^(TINYINT|SMALLINT|INTEGER|INT|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|INT2|INT4|INT8)\b", "integer"),
    (r"^(FLOAT|REAL|DOUBLE|DECIMAL|NUMERIC|FLOAT4|FLOAT8)\b", "float"),
    (r"^(BOOLEAN|BOOL)\b", "boolean"),
    (r"^TIMESTAMP", "timestamp"),
    (r"^DATE$", "date"),
)


def schema_type(engine_type: str) -> str:
    """The schema type (``integer``, ``float``, ``text``, ``boolean``, ``date``, ``timestamp``) of
    a DuckDB or PostgreSQL column type name; ``text`` for anything else."""
    name = engine_type.strip().upper()
    for pattern, dtype in _TYPE_PATTERNS:
        if re.match(pattern, name):
            return dtype
    return "text"


@dataclass(frozen=True)
class ColumnProfile:
    """One column in counts: rows, NULLs, distinct values; numeric extremes; and the distinct
    values themselves when there are at most ``max_values`` of them."""

    name: str
    dtype: str
    rows: int
    nulls: int
    distinct: int
    low: float | None
    high: float | None
    values: tuple[Any, ...] | None
    whole: bool = False
    """A float column whose values are all whole numbers (an integer stored as a decimal)."""


def scalar(con: Connector, sql: str) -> Any:
    """The single value of a one-row, one-column query (``v``)."""
    column = con.execute(sql).fetchnumpy()["v"]
    value = column.tolist()[0] if len(column) else None
    return None if value is None or value != value else value  # NaN from a masked array -> None


def profile_column(con: Connector, table: str, column: str, engine_type: str, max_values: int) -> ColumnProfile:
    """Counts for one column (a few aggregate queries, run where the data are)."""
    dtype = schema_type(engine_type)
    t, c = quote(table), quote(column)
    rows = int(scalar(con, f"SELECT COUNT(*) AS v FROM {t}") or 0)
    nulls = rows - int(scalar(con, f"SELECT COUNT({c}) AS v FROM {t}") or 0)
    distinct = int(scalar(con, f"SELECT COUNT(DISTINCT {c}) AS v FROM {t}") or 0)
    low = high = None
    if dtype in ("integer", "float"):
        low = scalar(con, f"SELECT CAST(MIN({c}) AS DOUBLE) AS v FROM {t}")
        high = scalar(con, f"SELECT CAST(MAX({c}) AS DOUBLE) AS v FROM {t}")
    whole = False
    if dtype == "float":
        fraction = f"SELECT COUNT(*) AS v FROM {t} WHERE {c} IS NOT NULL AND {c} <> FLOOR({c})"
        whole = distinct > 0 and int(scalar(con, fraction) or 0) == 0
    values = None
    if (dtype in ("integer", "text", "boolean") or whole) and 0 < distinct <= max_values:
        fetched = con.execute(f"SELECT DISTINCT {c} AS v FROM {t} WHERE {c} IS NOT NULL").fetchnumpy()["v"]
        values = tuple(sorted(v.item() if hasattr(v, "item") else v for v in fetched.tolist()))
    return ColumnProfile(column, dtype, rows, nulls, distinct, low, high, values, whole)


def count_where(con: Connector, table: str, condition: exp.Expr) -> int:
    """Rows of ``table`` where ``condition`` holds."""
    return int(scalar(con, f"SELECT COUNT(*) AS v FROM {quote(table)} WHERE {condition.sql('duckdb')}") or 0)
