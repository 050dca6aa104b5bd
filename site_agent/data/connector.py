"""The seam between the query path and a site's database engine.

``query/execute.py`` runs each local statement as ``con.execute(sql).fetchnumpy()`` and reads the
named columns as numpy arrays (masked or object arrays where a value is NULL). A DuckDB
connection does exactly that; every other engine implements :class:`Connector` and returns a
:class:`Columns` from ``execute``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np


class Result(Protocol):
    """What ``execute`` returns: the result's columns by name, as numpy arrays."""

    def fetchnumpy(self) -> Mapping[str, Any]: ...


class Connector(Protocol):
    """A site's tables, under the consortium's table and column names, in one engine.

    ``execute`` takes SQL in DuckDB's dialect (what the planner writes) and runs it where the data
    are. ``cursor`` returns a handle one thread may use while others use theirs. ``columns``
    lists the tables it serves with each column's engine type (no data read). ``close`` releases
    the engine.
    """

    dialect: str

    def execute(self, sql: str) -> Result: ...

    def cursor(self) -> Connector: ...

    def columns(self) -> dict[str, dict[str, str]]: ...

    def close(self) -> None: ...


class Columns:
    """A fetched result as named numpy arrays; NULLs are ``None`` in an object array."""

    def __init__(self, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self._data: dict[str, np.ndarray] = {}
        for i, name in enumerate(names):
            values = [row[i] for row in rows]
            if any(v is None for v in values):
                column = np.empty(len(values), dtype=object)
                column[:] = values
            else:
                column = np.asarray(values) if values else np.zeros(0, dtype=np.float64)
            self._data[name] = column

    def fetchnumpy(self) -> dict[str, np.ndarray]:
        return dict(self._data)


def quote(identifier: str) -> str:
    """``identifier`` as a double-quoted SQL identifier (DuckDB and PostgreSQL alike)."""
    return '"' + identifier.replace('"', '""') + '"'
