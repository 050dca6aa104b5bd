"""The consortium's common schema file, ``schema.toml`` beside ``consortium.toml``.

Every site serves the same tables with the same columns (a common data model), and every
site compiles queries against this one file, so plans and their digests agree. It is public:
it holds names, types, the public domains that GROUP BY enumerates and the grids on which
medians and quantiles are computed, never data. Example::

    [tables.patients]
    patient_id = { type = "text", person = true }         # the privacy unit (see below)
    region = "text"                                       # a column: just its type
    sex = { type = "text", domain = ["F", "M"] }          # GROUP BY sex enumerates F, M
    age = { type = "integer", grid = [0, 110, 1] }        # MEDIAN(age) on 0, 1, ..., 110
    weight = { type = "float", bounds = [20, 250] }       # DP mode clips weights to 20..250
    diabetes = "boolean"
    weight = "float"
    height = "float"

    [tables.patients.derived]                             # computed by each site's local SQL
    bmi = { expr = "weight / ((height / 100) * (height / 100))", grid = [10, 60, 0.1] }

A table's ``person = true`` column names its privacy unit: cell sizes count distinct persons,
joins go along person columns only, and the column is usable only there (docs/privacy.md).
A table without one counts each row as one person and cannot be joined.
A *derived* column (``[tables.NAME.derived]``: a name, then an expression or a table with
``expr`` and the usual ``type`` (float unless given), ``domain`` and ``grid``) is an expression
over the table's stored columns, checked when the file loads against the query language's rules
(its nodes, its one function allow-list, no aggregate, no person column). Queries use it like a
column; each site computes it in its local SQL. The name ``derived`` is therefore not a column.
Types: integer, float, text, boolean, date, timestamp. A boolean column's domain is
[false, true] unless given. No column may be called ``site``: ``SITE`` in a query is the
pseudo-column of per-site breakdowns (see docs/query-language.md).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import QueryError
from ..tomlfile import NAME_RE, Section, check_name, read_toml
from .catalog import SITE, Column, KeyValue, Schema, Table
from .parse import derived_expression

DTYPES = ("integer", "float", "text", "boolean", "date", "timestamp")


def _column(table: Section, name: str) -> Column:
    if not NAME_RE.match(name):
        local_name = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "column"
        raise table.error(
            name,
            f"column name {name!r} must be letters, digits, '-' or '_'; name it {local_name} here and let each "
            f'site map its own name in agent.toml: [tables.{table.prefix.rpartition(".")[2]}.columns] '
            f"{local_name} = {name!r}",
        )
    if name.lower() == SITE:
        raise table.error(name, f"the column name {SITE!r} is reserved: SITE in a query names the committee site")
    spec: Any = table.data[name]
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise table.error(name, 'must be a type name or a table like { type = "integer", grid = [0, 100, 1] }')
    col = Section(table.file, f"{table.prefix}.{name}", spec)
    col.only("type", "domain", "grid", "person", "bounds")
    dtype = col.get_str("type")
    if dtype not in DTYPES:
        raise col.error("type", f"unknown type {dtype!r} (known: {', '.join(DTYPES)})")
    domain: tuple[KeyValue, ...] | None = None
    if "domain" in col:
        raw = col.data["domain"]
        if not isinstance(raw, list) or not raw or not all(isinstance(v, (str, int, float, bool)) for v in raw):
            raise col.error("domain", "must be a non-empty list of strings, numbers or booleans")
        if len(set(raw)) != len(raw):
            raise col.error("domain", "has duplicate values")
        domain = tuple(raw)
    elif dtype == "boolean":
        domain = (False, True)
    grid: tuple[float, float, float] | None = None
    if "grid" in col:
        raw = col.data["grid"]
        if not (isinstance(raw, list) and len(raw) == 3 and all(isinstance(v, (int, float)) for v in raw)):
            raise col.error("grid", "must be [lo, hi, step]")
        grid = (float(raw[0]), float(raw[1]), float(raw[2]))
    bounds: tuple[float, float] | None = None
    if "bounds" in col:
        raw = col.data["bounds"]
        if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, (int, float)) for v in raw)):
            raise col.error("bounds", "must be [lo, hi]")
        if not raw[0] < raw[1]:
            raise col.error("bounds", "needs lo < hi")
        bounds = (float(raw[0]), float(raw[1]))
    person = col.get_bool("person", False)
    return Column(name.lower(), dtype, domain, grid, person, bounds=bounds)


def _derived(section: Section, name: str, table: Table) -> Column:
    """A derived column: its expression (checked against the query language's rules over the
    table's stored columns) and, like any column, a type (float unless given), domain or grid."""
    spec: Any = section.data[name]
    spec = {"expr": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, dict) or "expr" not in spec:
        raise section.error(name, 'must be an expression, or a table like { expr = "a / b", grid = [0, 10, 0.1] }')
    if "person" in spec:
        raise section.error(name, "a derived column cannot be the person column")
    if name.lower() in table.columns:
        raise section.error(name, f"{name!r} is also a stored column of table {table.name!r}")
    rest = {k: v for k, v in spec.items() if k != "expr"}
    column = _column(Section(section.file, section.prefix, {name: {"type": "float", **rest}}), name)
    text = Section(section.file, f"{section.prefix}.{name}", spec).get_str("expr")
    try:
        expr = derived_expression(text, table, key_only=column.dtype == "text")
    except QueryError as exc:
        raise section.error(name, f"{exc.message} (in the expression {text!r})") from None
    return replace(column, expr=expr)


def load_schema_file(path: Path | str) -> Schema:
    """Load and validate ``schema.toml``; ``ConfigError`` naming file and key on any problem."""
    root = read_toml(path)
    root.only("tables", "linkage")  # [linkage]: site_agent.linkage.declaration
    tables = []
    for name, section in root.section("tables").subsections():
        check_name(root.section("tables"), name, name, "table")
        stored = Table.of(name.lower(), [_column(section, col) for col in section.data if col != "derived"])
        derived = section.section("derived", required=False)
        extra = [_derived(derived, col, stored) for col in derived.data]
        tables.append(Table.of(name.lower(), [*stored.columns.values(), *extra]))
    return Schema.of(tables)
