"""The public facts a query compiles against: the consortium schema and the disclosure rules.

Every site compiles the same query text against the same :class:`Schema` (the consortium's
common data model, public by agreement) and the same combined :class:`DisclosureRules` (the
strictest of every site's policy), so every site derives the same plan and plan digest.

Group keys must have a public domain: a column declares its ``domain`` (the list of values a
GROUP BY on it enumerates) and a numeric column may declare a ``grid`` (lo, hi, step) on which
medians and quantiles are computed. Nothing about a site's own data decides which cells exist.

:class:`DisclosureRules` is the small interface the planner needs from site policy; the policy
module builds one per site and :meth:`DisclosureRules.combine` takes the strictest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, PolicyRefusal
from ..policy.model import Policy

KeyValue = str | int | float | bool | None

QUANTILE_RANGE = (0.05, 0.95)
"""Quantiles an analyst may ask for when MIN and MAX are not allowed (DataSHIELD's default)."""

SITE = "site"
"""The reserved pseudo-column of per-site breakdowns (``GROUP BY SITE``): no table may have a
column of this name, so ``SITE`` in a query always means the committee site a row belongs to."""


@dataclass(frozen=True)
class Column:
    """A column of the common schema.

    ``dtype`` is one of ``integer``, ``float``, ``text``, ``boolean``, ``date``, ``timestamp``.
    ``domain`` lists the public values a GROUP BY on this column enumerates (``None`` in the
    list makes NULL a group). ``grid`` = (lo, hi, step) is the public grid for MEDIAN and
    quantiles; values are clamped to [lo, hi] and rounded to the nearest grid point.
    ``person`` marks the table's privacy unit: the column that identifies a person. Cell sizes
    count distinct persons, joins follow person columns only, and the column appears nowhere
    else in a query (see docs/privacy.md). ``bounds`` = (lo, hi) are the public limits that DP
    mode clips the column's values to (without them, the grid's lo and hi; see
    docs/privacy-dp.md).
    ``expr`` makes it a *derived* column the consortium declared (``[tables.t.derived]`` in
    schema.toml): an SQL expression over the table's stored columns, which queries use like a
    column and each site computes in its local SQL (no site stores it).
    """

    name: str
    dtype: str = "float"
    domain: tuple[KeyValue, ...] | None = None
    grid: tuple[float, float, float] | None = None
    person: bool = False
    expr: str | None = None
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.grid is not None:
            lo, hi, step = self.grid
            if not (step > 0 and hi > lo):
                raise ConfigError(f"column {self.name!r}: grid needs lo < hi and step > 0")
            if (hi - lo) / step > 100_000:
                raise ConfigError(f"column {self.name!r}: grid has more than 100000 points")
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ConfigError(f"column {self.name!r}: bounds need lo < hi")

    @property
    def clip(self) -> tuple[float, float] | None:
        """The public range DP mode clips values to: ``bounds``, else the grid's ends, else the
        smallest and largest value of a numeric domain, else None."""
        if self.bounds is not None:
            return self.bounds
        if self.grid is not None:
            return (self.grid[0], self.grid[1])
        numbers = [float(v) for v in self.domain or () if isinstance(v, int | float) and not isinstance(v, bool)]
        return (min(numbers), max(numbers)) if numbers and len(numbers) == len(self.domain or ()) else None


@dataclass(frozen=True)
class Table:
    """A table of the common schema: its columns by name (lower case)."""

    name: str
    columns: Mapping[str, Column]

    def __post_init__(self) -> None:
        if SITE in self.columns:
            raise ConfigError(
                f"table {self.name!r}: the column name {SITE!r} is reserved (SITE in a query names the "
                "committee site a row belongs to); rename the column"
            )

        persons = [c.name for c in self.columns.values() if c.person]
        if len(persons) > 1:
            raise ConfigError(f"table {self.name!r}: one person column at most, not {', '.join(persons)}")

    @classmethod
    def of(cls, name: str, columns: Iterable[Column]) -> Table:
        return cls(name.lower(), {c.name.lower(): c for c in columns})

    @property
    def stored(self) -> dict[str, Column]:
        """The columns a site serves (every column but the derived ones)."""
        return {n: c for n, c in self.columns.items() if c.expr is None}

    @property
    def person(self) -> str | None:
        """The privacy unit's column, or None: then each row is taken to be one person."""
        return next((c.name for c in self.columns.values() if c.person), None)


@dataclass(frozen=True)
class Schema:
    """The consortium's common schema: tables by name (lower case)."""

    tables: Mapping[str, Table]

    @classmethod
    def of(cls, tables: Iterable[Table]) -> Schema:
        return cls({t.name: t for t in tables})

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON form (sorted), part of what the plan digest covers."""
        return {
            t.name: {
                c.name: {
                    "dtype": c.dtype,
                    "domain": list(c.domain) if c.domain else None,
                    "grid": c.grid,
                    **({"person": True} if c.person else {}),
                    **({"derived": c.expr} if c.expr is not None else {}),
                    **({"bounds": list(c.bounds)} if c.bounds is not None else {}),
                }
                for c in sorted(t.columns.values(), key=lambda c: c.name)
            }
            for t in sorted(self.tables.values(), key=lambda t: t.name)
        }


_DUCKDB_TYPES = {
    "BIGINT": "integer",
    "INTEGER": "integer",
    "SMALLINT": "integer",
    "TINYINT": "integer",
    "HUGEINT": "integer",
    "DOUBLE": "float",
    "FLOAT": "float",
    "REAL": "float",
    "VARCHAR": "text",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
}


def schema_from_duckdb(
    con: Any,
    domains: Mapping[str, Sequence[KeyValue]] | None = None,
    grids: Mapping[str, tuple[float, float, float]] | None = None,
    persons: Mapping[str, str] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> Schema:
    """Read table and column types from a DuckDB connection and attach declared domains/grids.

    ``domains``, ``grids`` and ``bounds`` (DP clipping ranges) are keyed ``"table.column"``;
    ``persons`` maps a table to its person column. Meant for tests and demos: a real consortium
    agrees on the schema file rather than reading it off one site's database.
    """
    domains, grids, bounds = domains or {}, grids or {}, bounds or {}
    persons = {t.lower(): c.lower() for t, c in (persons or {}).items()}
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    cols: dict[str, list[Column]] = {}
    for table, column, dtype in rows:
        key = f"{table}.{column}".lower()
        base = str(dtype).split("(")[0].upper()
        dom = domains.get(key)
        cols.setdefault(table.lower(), []).append(
            Column(
                column.lower(),
                _DUCKDB_TYPES.get(base, "float" if base.startswith("DECIMAL") else "text"),
                tuple(dom) if dom is not None else None,
                grids.get(key),
                person=persons.get(table.lower()) == column.lower(),
                bounds=bounds.get(key),
            )
        )
    return Schema.of(Table.of(t, c) for t, c in cols.items())


@dataclass(frozen=True)
class DisclosureRules:
    """What the planner needs from site policy.

    ``exposed`` maps a table to the columns an analyst may reference (``None``: all of the
    schema's columns); ``identifiers`` are columns that may appear only inside COUNT(DISTINCT)
    and join conditions; ``allow_min_max`` gates MIN/MAX (they disclose one person's value);
    ``statement_kinds`` are the kinds every site allows (``None``: all), so a per-site
    breakdown (``GROUP BY SITE``) compiles only where every site allows ``per_site_breakdown``.
    ``quantile_range`` bounds the quantiles a query may ask for unless MIN and MAX are allowed
    (quantiles near 0 and 1 are the extremes).

    Optional release options (docs/privacy.md, "Options per site policy"):
    ``redact_at_or_below`` = N withholds released counts 1..N (0: off), so every release check
    uses :attr:`threshold`; ``round_counts`` = b rounds every released count to the nearest
    multiple of b on shares (0: off); ``min_sites`` withholds a cell unless that many sites
    have rows in it; ``model_min_df`` and ``model_events_per_term`` are the model rules
    (:mod:`site_agent.privacy.models`; ACRO's 10 and 10); ``dominance`` = (n, p) withholds a
    sum whose n largest per-person contributions make more than p percent of it (None: off).
    """

    min_cell_size: int = 5
    max_groups: int = 10_000
    allow_min_max: bool = False
    exposed: Mapping[str, frozenset[str]] | None = None
    identifiers: frozenset[str] = field(default_factory=frozenset)
    statement_kinds: frozenset[str] | None = None
    quantile_range: tuple[float, float] = QUANTILE_RANGE
    redact_at_or_below: int = 0
    round_counts: int = 0
    min_sites: int = 1
    model_min_df: int = 10
    model_events_per_term: int = 10
    dominance: tuple[int, int] | None = None

    policy: Policy | None = field(default=None, compare=False)
    """The combined site policy these rules come from, if any: it names the refusing site."""

    @property
    def threshold(self) -> int:
        """The k every release check uses: counts 1..k-1 are withheld. The larger of the minimum
        cell size and one above the redaction threshold."""
        return max(self.min_cell_size, self.redact_at_or_below + 1)

    def refusal(self, rule: str, message: str, check: str, *args: Any) -> PolicyRefusal:
        """The refusal to raise: the site policy's own (naming the site and its rule) when the
        rules come from site policies, else one attributed to the consortium's rules.

        ``check`` names the :class:`Policy` method that decides (e.g. ``"check_table"``).
        """
        if self.policy is not None:
            try:
                getattr(self.policy, check)(*args)
            except PolicyRefusal as refused:
                return refused
        return PolicyRefusal("consortium", rule, message)

    def to_json(self) -> dict[str, Any]:
        return {
            "min_cell_size": self.min_cell_size,
            "max_groups": self.max_groups,
            "allow_min_max": self.allow_min_max,
            "exposed": None if self.exposed is None else {t: sorted(c) for t, c in sorted(self.exposed.items())},
            "identifiers": sorted(self.identifiers),
            "statement_kinds": None if self.statement_kinds is None else sorted(self.statement_kinds),
            "quantile_range": list(self.quantile_range),
            "redact_at_or_below": self.redact_at_or_below,
            "round_counts": self.round_counts,
            "min_sites": self.min_sites,
            "model_min_df": self.model_min_df,
            "model_events_per_term": self.model_events_per_term,
            "dominance": None if self.dominance is None else list(self.dominance),
        }


def rules_from_policy(policy: Policy, schema: Schema) -> DisclosureRules:
    """The planner's view of a (combined) site policy: exposed tables and columns, identifier
    columns (usable only in JOIN ... ON and COUNT(DISTINCT ...)), limits, MIN/MAX and the
    statement kinds every site allows."""
    exposed: dict[str, frozenset[str]] = {}
    identifiers: set[str] = set()
    for name, tp in (policy.tables or {}).items():  # a site without data has no table rules
        if name not in schema.tables:
            continue
        columns = tp.columns if tp.columns is not None else frozenset(schema.tables[name].columns)
        exposed[name] = frozenset(columns) | tp.identifiers
        identifiers |= {f"{name}.{c}" for c in tp.identifiers}
    return DisclosureRules(
        min_cell_size=policy.min_cell_size,
        max_groups=policy.max_groups,
        allow_min_max=policy.allow_min_max,
        exposed=exposed,
        identifiers=frozenset(identifiers),
        statement_kinds=policy.statement_kinds,
        redact_at_or_below=policy.redact_at_or_below,
        round_counts=policy.round_counts,
        min_sites=policy.min_sites,
        model_min_df=policy.model_min_df,
        model_events_per_term=policy.model_events_per_term,
        dominance=policy.dominance,
        policy=policy,
    )
