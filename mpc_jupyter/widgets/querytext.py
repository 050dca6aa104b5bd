"""Query text from a cohort explorer's choices, with identifiers and literals quoted safely.

Only names that exist in the consortium's schema and values from a key's public domain get
into the text, and each is quoted (``"column"``, ``'it''s'``), so no choice can change the
shape of the query.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from site_agent.query.catalog import KeyValue, Schema, Table

MEASURES: Mapping[str, str] = {
    "count": "COUNT(*) only",
    "avg": "mean, AVG(x)",
    "median": "median, MEDIAN(x)",
    "stddev": "standard deviation, STDDEV(x)",
    "proportion": "proportion with 95% CI, PROPORTION(x)",
}
"""Measures the explorer offers (every query also counts rows, so suppressed cells show)."""

_NUMERIC = ("integer", "float")


def quote_identifier(name: str) -> str:
    """``"name"`` with embedded double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: KeyValue) -> str:
    """A SQL literal: strings in single quotes (doubled inside), TRUE/FALSE, finite numbers, NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a literal")
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def key_columns(table: Table) -> list[str]:
    """Columns with a public domain: what GROUP BY and the value filters may use."""
    return [c.name for c in table.columns.values() if c.domain is not None]


def measure_columns(table: Table, measure: str) -> list[str]:
    """Columns ``measure`` applies to (MEDIAN needs a grid, PROPORTION a boolean)."""
    cols = table.columns.values()
    if measure in ("avg", "stddev"):
        return [c.name for c in cols if c.dtype in _NUMERIC]
    if measure == "median":
        return [c.name for c in cols if c.grid is not None]
    if measure == "proportion":
        return [c.name for c in cols if c.dtype == "boolean"]
    return []


@dataclass(frozen=True)
class CohortQuery:
    """A grouped query over one table: keys, value filters (``column IN (...)``) and one measure."""

    table: str
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, tuple[KeyValue, ...]] = field(default_factory=dict)
    measure: str = "count"
    column: str | None = None

    def check(self, schema: Schema) -> None:
        """``ValueError`` naming the first choice the schema does not allow."""
        if self.table not in schema.tables:
            raise ValueError(f"unknown table {self.table!r}")
        table = schema.tables[self.table]
        keys = key_columns(table)
        for name in (*self.group_by, *self.filters):
            if name not in keys:
                raise ValueError(f"{self.table}.{name} has no public domain: it cannot be a key or a filter")
        for name, values in self.filters.items():
            domain = table.columns[name].domain or ()
            outside = [v for v in values if v not in domain]
            if outside or not values:
                raise ValueError(f"filter on {name}: choose values from its domain (not {outside})")
        if self.measure not in MEASURES:
            raise ValueError(f"unknown measure {self.measure!r} (known: {', '.join(MEASURES)})")
        if self.measure != "count" and self.column not in measure_columns(table, self.measure):
            raise ValueError(f"{self.measure} needs one of: {', '.join(measure_columns(table, self.measure))}")

    def text(self) -> str:
        """The query text (call ``check`` first)."""
        keys = [quote_identifier(k) for k in self.group_by]
        select = [*keys, 'COUNT(*) AS "n"']
        if self.measure != "count" and self.column is not None:
            func = self.measure.upper()
            select.append(
                f"{func}({quote_identifier(self.column)}) AS {quote_identifier(f'{self.measure}_{self.column}')}"
            )
        lines = [f"SELECT {', '.join(select)}", f"FROM {quote_identifier(self.table)}"]
        conditions = [self._condition(name, values) for name, values in self.filters.items()]
        if conditions:
            lines.append("WHERE " + "\n  AND ".join(conditions))
        if keys:
            lines.append(f"GROUP BY {', '.join(keys)}")
        return "\n".join(lines)

    @staticmethod
    def _condition(name: str, values: tuple[KeyValue, ...]) -> str:
        column = quote_identifier(name)
        present = [quote_literal(v) for v in values if v is not None]
        parts = [f"{column} IN ({', '.join(present)})"] if present else []
        if None in values:
            parts.append(f"{column} IS NULL")
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
