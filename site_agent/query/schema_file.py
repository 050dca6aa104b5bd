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
    diabetes = "boolean"

A table's ``person = true`` column names its privacy unit: cell sizes count distinct persons,
joins go along person columns only, and the column is usable only there (docs/privacy.md).
A table without one counts each row as one person and cannot be joined.
Types: integer, float, text, boolean, date, timestamp. A boolean column's domain is
[false, true] unless given. No column may be called ``site``: ``SITE`` in a query is the
pseudo-column of per-site breakdowns (see docs/query-language.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..tomlfile import NAME_RE, Section, check_name, read_toml
from .catalog import SITE, Column, KeyValue, Schema, Table

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
    col.only("type", "domain", "grid", "person")
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
    person = col.get_bool("person", False)
    return Column(name.lower(), dtype, domain, grid, person)


def load_schema_file(path: Path | str) -> Schema:
    """Load and validate ``schema.toml``; ``ConfigError`` naming file and key on any problem."""
    root = read_toml(path)
    root.only("tables", "linkage")  # [linkage]: site_agent.linkage.declaration
    tables = []
    for name, section in root.section("tables").subsections():
        check_name(root.section("tables"), name, name, "table")
        tables.append(Table.of(name.lower(), [_column(section, col) for col in section.data]))
    return Schema.of(tables)
