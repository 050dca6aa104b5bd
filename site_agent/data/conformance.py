"""Where a site's data disagree with the consortium schema, before any query runs.

``mpc-site-agent check`` calls :func:`conformance` on the site's own tables (as its engine
presents them, after column and code mapping). Each finding names a table and column and says
what is wrong in counts (values outside the domain, NULLs where a GROUP BY would refuse them,
non-whole numbers in an integer column, a missing column, a type the schema does not allow),
never a value of a row. A ``fail`` makes queries on that column fail or refuse; a ``note`` is
worth knowing (NULLs skipped by aggregates, values clamped to a grid).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlglot import exp

from ..query.catalog import Column, Schema
from .connector import Connector
from .profile import count_where, schema_type

COMPATIBLE = {("float", "integer"), ("timestamp", "date"), ("integer", "boolean")}
"""(schema type, engine type) pairs that read correctly although the types differ."""


@dataclass(frozen=True)
class Finding:
    table: str
    column: str
    severity: str  # "fail" or "note"
    problem: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}: {self.problem}"


def conformance(con: Connector, schema: Schema, tables: Iterable[str]) -> list[Finding]:
    """Findings for each of ``tables`` (consortium names the site serves) against ``schema``."""
    served = con.columns()
    out: list[Finding] = []
    for name in tables:
        table = schema.tables.get(name)
        if table is None:
            out.append(Finding(name, "*", "note", "not in schema.toml: analysts cannot query it"))
            continue
        if name not in served:
            out.append(Finding(name, "*", "fail", "declared in schema.toml but not served: add it to agent.toml"))
            continue
        for extra in sorted(set(served[name]) - set(table.columns)):
            out.append(Finding(name, extra, "note", "not in schema.toml: analysts cannot use it"))
        for column in table.stored.values():  # derived columns are computed in the local SQL
            out += _column(con, name, column, served[name].get(column.name))
    return out


def _column(con: Connector, table: str, column: Column, engine_type: str | None) -> list[Finding]:
    def finding(severity: str, problem: str) -> Finding:
        return Finding(table, column.name, severity, problem)

    if engine_type is None:
        return [finding("fail", f"missing: map a local column to it in agent.toml [tables.{table}.columns]")]
    out = []
    local = schema_type(engine_type)
    ref = exp.column(column.name, quoted=True)
    if local != column.dtype and (column.dtype, local) not in COMPATIBLE:
        if column.dtype == "integer" and local == "float":
            whole = exp.EQ(this=exp.Floor(this=ref.copy()), expression=ref.copy())
            bad = count_where(con, table, exp.and_(exp.Not(this=exp.Is(this=ref.copy(), expression=exp.Null())),
                                                    exp.Not(this=whole)))  # fmt: skip
            if bad:
                out.append(finding("fail", f"{bad} values are not whole numbers (the schema says integer)"))
        else:
            return [finding("fail", f"type {engine_type} where the schema says {column.dtype}: cast or map it")]
    nulls = count_where(con, table, exp.Is(this=ref.copy(), expression=exp.Null()))
    if column.domain is not None:
        allowed = [v for v in column.domain if v is not None]
        outside = exp.and_(
            exp.Not(this=exp.Is(this=ref.copy(), expression=exp.Null())),
            exp.Not(this=exp.In(this=ref.copy(), expressions=[exp.convert(v) for v in allowed])),
        )
        try:
            bad = count_where(con, table, outside)
        except Exception as exc:  # the engine cannot compare the column with the domain's values
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return [*out, finding("fail", f"cannot compare with the domain: {first}")]
        if bad:
            out.append(finding("fail", f"{bad} values outside the domain: a GROUP BY on it is refused"))
        if nulls and None not in column.domain:
            out.append(finding("fail", f"{nulls} NULLs, not in the domain: a GROUP BY on it is refused"))
        elif nulls:
            out.append(finding("note", f"{nulls} NULLs (a group of their own)"))
    elif nulls:
        out.append(finding("note", f"{nulls} NULLs (skipped by aggregates)"))
    if column.grid is not None:
        lo, hi, _ = column.grid
        beyond = count_where(con, table, exp.or_(exp.LT(this=ref.copy(), expression=exp.convert(lo)),
                                                 exp.GT(this=ref.copy(), expression=exp.convert(hi))))  # fmt: skip
        if beyond:
            out.append(finding("note", f"{beyond} values outside the grid [{lo:g}, {hi:g}]: clamped for medians"))
    return out
