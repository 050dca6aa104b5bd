"""``mpc-consortium schema draft SOURCE...``: propose a ``schema.toml`` from sites' tables.

A SOURCE is a CSV or Parquet file (the table is named after the file), a DuckDB file or a
PostgreSQL URL with ``#table`` (``clinic.duckdb#lung``, ``postgresql://me@db/clinic#public.lung``),
each optionally prefixed ``NAME=`` to name the consortium table. Several sources of one table
(extracts from several sites) are merged: types widen, domains unite, grids cover every range.

The draft is for review, never for use as is: each proposal carries a ``# REVIEW`` comment.

* **Types** from the engine's column types.
* **Domains** for integer, text and boolean columns with at most ``--max-domain`` distinct
  values: the values *seen* in these sources; another site may hold more, and a site with a value
  outside the domain refuses GROUP BY queries on that column.
* **Grids** for numeric columns: the range seen, rounded outwards to a power of ten (so the draft
  shows no site's exact extreme), in about a hundred to a thousand steps.
* **Privacy unit**: a column named ``id``, ``*_id`` or ``person_id`` is proposed, as a comment,
  as the person identifier each site declares in its policy (``identifiers``).
* **Names** become letters, digits and ``_``; where a local name differs (``ph.ecog`` ->
  ``ph_ecog``), a comment gives the ``agent.toml`` mapping line.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import SERVER_SCHEMES, TABLE_FORMATS, TableSource, redact_url
from ..data import open_sources
from ..data.profile import ColumnProfile, profile_column
from ..errors import ConfigError
from ..query.catalog import SITE
from ..tomlfile import toml_key, toml_str

DEFAULT_MAX_DOMAIN = 12
ID_RE = re.compile(r"^(id|.*_id|person_?id|patient_?id)$")


def add_parser(sub: Any) -> None:
    """Register ``schema draft`` on the ``mpc-consortium`` sub-command parser ``sub``."""
    schema = sub.add_parser("schema", help="schema.toml tools")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    p = schema_sub.add_parser(
        "draft",
        help="propose a schema.toml from sites' tables, with comments to review",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("sources", nargs="+", metavar="[NAME=]FILE_OR_URL")
    p.add_argument("--out", type=Path, help="write here (refuses to overwrite) instead of printing")
    p.add_argument("--max-domain", type=int, default=DEFAULT_MAX_DOMAIN, help="most distinct values for a domain")


def run(args: argparse.Namespace) -> str:
    """The draft's text (or where it was written)."""
    text = draft(args.sources, args.max_domain)
    if args.out is None:
        return text.rstrip("\n")
    if args.out.exists():
        raise ConfigError(f"{args.out} exists; choose another --out or remove it")
    args.out.write_text(text)
    return f"wrote a draft schema to {args.out}: review every # REVIEW comment before sharing it"


def parse_source(text: str) -> TableSource:
    """``[NAME=]FILE_OR_URL[#table]`` as a table source."""
    name, sep, rest = text.partition("=")
    if not sep or "://" in name or "/" in name:
        name, rest = "", text
    location, _, table = rest.partition("#")
    scheme = location.partition("://")[0].lower() if "://" in location else ""
    if scheme:
        if scheme not in SERVER_SCHEMES:
            raise ConfigError(f"{redact_url(location)}: only postgresql:// URLs are supported")
        if not table:
            raise ConfigError(f"{redact_url(location)}: name the table after '#', e.g. #public.lung")
        return TableSource(_clean(name or table.rpartition(".")[2].strip('"')), None, "postgresql", location, table)
    path = Path(location).expanduser().resolve()
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None or not path.exists():
        problem = "not a CSV, Parquet or DuckDB file" if path.exists() else "not found"
        raise ConfigError(f"{location}: {problem}")
    if fmt == "duckdb" and not table:
        raise ConfigError(f"{location}: name the table after '#', e.g. {location}#lung")
    default = (table or path.stem).rpartition(".")[2].strip('"')
    return TableSource(_clean(name or default), path, fmt, None, table or None)


def _clean(name: str) -> str:
    """A schema name: lower case letters, digits and ``_`` (``ph.ecog`` -> ``ph_ecog``)."""
    out = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "column"
    out = out if out[0].isalnum() else "c" + out
    return out + "_" if out == SITE else out


@dataclass
class _Merged:
    """One column across every source of a table."""

    dtype: str
    local: set[str] = field(default_factory=set)
    values: set[Any] | None = None
    low: float | None = None
    high: float | None = None
    rows: int = 0
    distinct_max: int = 0
    unique: bool = True
    whole: bool = False
    """Every source holds whole numbers only (integers, or decimals like 1.0)."""
    where: list[str] = field(default_factory=list)

    def add(self, p: ColumnProfile, where: str) -> None:
        self.whole = (self.whole or not self.where) and (p.dtype == "integer" or p.whole)
        if p.dtype != self.dtype:
            self.dtype = "float" if {p.dtype, self.dtype} == {"integer", "float"} else "text"
        self.local.add(p.name)
        self.values = None if p.values is None or self.values is None else self.values | set(p.values)
        self.low = p.low if self.low is None else min(self.low, p.low) if p.low is not None else self.low
        self.high = p.high if self.high is None else max(self.high, p.high) if p.high is not None else self.high
        self.rows += p.rows
        self.distinct_max = max(self.distinct_max, p.distinct)
        self.unique = self.unique and p.distinct == p.rows - p.nulls
        self.where.append(where)


def draft(sources: list[str], max_domain: int = DEFAULT_MAX_DOMAIN) -> str:
    """The text of a draft ``schema.toml`` for ``sources``."""
    tables: dict[str, dict[str, _Merged]] = {}
    for text in sources:
        source = parse_source(text)
        con = open_sources({source.name: source})
        try:
            where = source.describe()
            merged = tables.setdefault(source.name, {})
            for local, engine_type in con.columns()[source.name].items():
                p = profile_column(con, source.name, local, engine_type, max_domain)
                name = _clean(local)
                if name not in merged:
                    merged[name] = _Merged(p.dtype, values=set())
                merged[name].add(p, where)
        finally:
            con.close()
    lines = [
        "# Draft consortium schema, written by `mpc-consortium schema draft` from "
        + ", ".join(redact_url(s) for s in sources)
        + ".",
        "# Review every `# REVIEW` line with the sites before sharing this file: domains list the",
        "# values seen in these sources only, and grids come from their ranges.",
    ]
    for table, columns in tables.items():
        lines += ["", f"[tables.{toml_key(table)}]"]
        ids = [n for n, c in columns.items() if ID_RE.match(n)]
        for n in ids:
            how = "unique per row here" if columns[n].unique else "repeated: a person may have several rows"
            lines.append(
                f"# REVIEW privacy unit: {n!r} looks like the person identifier ({how}); list it under "
                f'identifiers in each site\'s policy.toml (tables.{table}.identifiers = ["{n}"])'
            )
        for name, col in columns.items():
            lines += _column_lines(table, name, col, name in ids, max_domain)
    return "\n".join(lines) + "\n"


def _column_lines(table: str, name: str, col: _Merged, is_id: bool, max_domain: int) -> list[str]:
    out: list[str] = []
    if col.dtype == "float" and col.whole:
        col.dtype = "integer"
        out.append("# REVIEW type: whole numbers stored as decimals; proposed as integer")
    for local in sorted(col.local - {name}):
        out.append(f"# local name {local!r}: map it in agent.toml [tables.{table}.columns] {name} = {toml_str(local)}")
    spec = [f"type = {toml_str(col.dtype)}"]
    domain = not is_id and bool(col.values) and len(col.values or ()) <= max_domain and col.dtype in ("integer", "text")
    if domain and col.values:
        values = sorted(col.values, key=lambda v: (str(type(v)), v))
        spec.append("domain = [" + ", ".join(_toml_value(v) for v in values) + "]")
        out.append(
            f"# REVIEW domain: the {len(values)} values seen in {', '.join(col.where)}; add values other sites hold"
        )
    elif not is_id and col.dtype == "text" and col.distinct_max > max_domain:
        out.append(
            f"# REVIEW: more than {max_domain} distinct values, so no domain (not a GROUP BY key); "
            "if it is a category, list its values as a domain"
        )
    numeric = col.dtype in ("integer", "float")
    if not is_id and not domain and numeric and col.low is not None and col.high is not None:
        lo, hi, step = rounded_grid(col.low, col.high, col.dtype == "integer")
        spec.append(f"grid = [{lo:g}, {hi:g}, {step:g}]")
        out.append("# REVIEW grid: the range seen, rounded outwards; medians and quantiles use these points")
    value = spec[0].partition(" = ")[2] if len(spec) == 1 else "{ " + ", ".join(spec) + " }"
    out.append(f"{toml_key(name)} = {value}")
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_str(value)
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def rounded_grid(low: float, high: float, integer: bool) -> tuple[float, float, float]:
    """``[lo, hi, step]``: the range rounded outwards to a power of ten below its span, split
    into steps of a hundredth of that power (at least 1 for integers): 100 to 1,000 points."""
    span = max(high - low, 1e-9)
    unit = 10.0 ** math.floor(math.log10(span))
    lo, hi = math.floor(low / unit) * unit, math.ceil(high / unit) * unit
    if hi <= lo:
        hi = lo + unit
    step = unit / 100
    if integer:
        step = max(1.0, step)
    return float(lo), float(hi), float(step)
