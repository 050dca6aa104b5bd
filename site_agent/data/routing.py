"""One site, tables in several engines: each query runs in the engine holding all its tables.

File tables (CSV, Parquet, DuckDB files) share one embedded DuckDB; tables behind the same
server URL share one server connection. A query that joins tables held by different engines is
refused: running it would mean copying one side's rows to the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlglot
from sqlglot import exp

from ..config import TableSource
from ..errors import ConfigError, QueryError
from .connector import Connector, Result
from .embedded import open_files
from .server import open_server


class Routed:
    """Several connectors behind one: ``execute`` picks the one that serves the query's tables."""

    dialect = "duckdb"

    def __init__(self, parts: Sequence[Connector]) -> None:
        self.parts = list(parts)
        self._owner = {table: part for part in self.parts for table in part.columns()}

    def execute(self, sql: str) -> Result:
        tree = sqlglot.parse_one(sql, read="duckdb")
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        tables = {t.name.lower() for t in tree.find_all(exp.Table)} - ctes
        owners = {id(self._owner[t]): self._owner[t] for t in tables if t in self._owner}
        if len(owners) > 1:
            raise QueryError(
                f"the query joins tables held in different databases at this site ({', '.join(sorted(tables))})"
            )
        part = next(iter(owners.values()), self.parts[0])
        return part.execute(sql)

    def cursor(self) -> Routed:
        return Routed([part.cursor() for part in self.parts])

    def columns(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for part in self.parts:
            out.update(part.columns())
        return out

    def close(self) -> None:
        for part in self.parts:
            part.close()


def open_sources(tables: Mapping[str, TableSource], threads: int | None = None) -> Connector:
    """A connector serving every table of a site's ``agent.toml``: the embedded DuckDB for files,
    one server connection per ``source`` URL, behind :class:`Routed` when there are several."""
    groups: dict[str | None, dict[str, TableSource]] = {}
    for name, source in tables.items():
        groups.setdefault(source.source, {})[name] = source
    parts: list[Connector] = []
    try:
        for url, group in groups.items():
            parts.append(open_files(group, threads) if url is None else open_server(group))
    except ConfigError:
        for part in parts:
            part.close()
        raise
    if not parts:
        return open_files({}, threads)
    return parts[0] if len(parts) == 1 else Routed(parts)
