"""A site's disclosure policy (``policy.toml``), its digest, and how policies combine.

Each site states what it allows; a query runs only if every site allows it, and the pooled
result is protected by the strictest setting of any site (``combine``). Checks raise
``PolicyRefusal(site, rule, message)`` where ``rule`` is the ``policy.toml`` key that said no,
so the analyst learns exactly who refused and why, and the site's IT knows which line to change.

A site that holds no data (a neutral compute member, ``data = false`` in the consortium file)
has a policy without table rules: ``tables`` is ``None``. Its table, column and identifier rules
then neither expose nor restrict anything (the data sites' rules alone decide what is usable),
while its other rules (analysts, statement kinds, min_cell_size, limits, MIN/MAX) count as any
site's.

Table and column names compare case-insensitively (as unquoted SQL identifiers do): the policy
lower-cases them on load and the checks lower-case what they are given.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from site_agent.crypto.envelope import canonical_json
from site_agent.errors import ConfigError, PolicyRefusal
from site_agent.privacy import dominance
from site_agent.review.store import DEFAULT_KEEP_HOURS
from site_agent.tomlfile import Section, check_name, read_toml

from .privacy import PrivacyPolicy, check_mode, combine_privacy, load_privacy

DEFAULT_MIN_CELL_SIZE = 5
DEFAULT_MAX_GROUPS = 1000
DEFAULT_MAX_QUERIES_PER_HOUR = 100
STATEMENT_KINDS = frozenset({"aggregate", "per_site_breakdown", "model"})
DEFAULT_STATEMENT_KINDS = frozenset({"aggregate", "model"})
MAX_ROUNDING_BASE = 1000
REVIEW_MODES = ("auto", "failing", "dpo")
"""``[privacy] review``, from the least to the most reviewed (docs/review-and-report.md)."""
DEFAULT_REVIEW_HOURS = 72


@dataclass(frozen=True)
class TablePolicy:
    """What of one table may be used: ``columns`` (``None`` = all but identifiers) and identifiers."""

    columns: frozenset[str] | None
    identifiers: frozenset[str]


@dataclass(frozen=True)
class Policy:
    """One site's policy, or the combination of several (then ``parts`` holds the sites' own).

    ``analysts`` is ``None`` when any registered analyst may query ("*"). ``tables`` is ``None``
    for a site that holds no data: it has no table rules (see the module docstring).
    """

    site: str
    min_cell_size: int = DEFAULT_MIN_CELL_SIZE
    analysts: frozenset[str] | None = None
    statement_kinds: frozenset[str] = DEFAULT_STATEMENT_KINDS
    max_groups: int = DEFAULT_MAX_GROUPS
    max_queries_per_hour: int = DEFAULT_MAX_QUERIES_PER_HOUR
    allow_min_max: bool = False
    redact_at_or_below: int = 0
    """Released counts 1..N are withheld (OpenSAFELY redacts at or below 7); 0: off. Every
    release check then uses ``max(min_cell_size, N + 1)``."""
    round_counts: int = 0
    """Released counts are rounded to a multiple of this base on shares (5 as OpenSAFELY and
    ONS); 0: off. Combined sites round to the least common multiple of their bases."""
    min_sites: int = 1
    """A cell is withheld unless at least this many sites have rows in it (1: off)."""
    model_min_df: int = 10
    """A model needs at least this many residual degrees of freedom (ACRO: 10)."""
    model_events_per_term: int = 10
    """A binary or count model needs this many events per parameter besides the intercept (ACRO: 10)."""
    dominance: tuple[int, int] | None = None
    """The (n, p) dominance rule for sums: a cell whose n largest per-person contributions make
    more than p percent of its total is withheld (None: off; site_agent/privacy/dominance.py)."""
    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    """DP mode and budgets (the ``[privacy]`` section, :mod:`.privacy`)."""
    review: str = "auto"
    """``[privacy] review``: "auto", the release rule alone decides what goes to the analyst;
    "failing", a result where the release rule withheld a cell is held as shares until this
    site's data-protection officer approves releasing it as computed (the cells of 1 to k-1
    persons and their secondary suppressions; never a difference: docs/review-and-report.md);
    "dpo", every exact result is held (aggregates, models, survival curves; DP and linkage are
    refused), and one with withheld cells as under "failing"."""
    review_hours: int = DEFAULT_REVIEW_HOURS
    """``[privacy] review_hours``: a held result not approved by then is discarded."""
    review_keep_hours: int = DEFAULT_KEEP_HOURS
    """``[privacy] review_keep_hours``: an approved result whose receipt the analyst has not
    confirmed this long after the last approval is discarded at every member."""
    tables: Mapping[str, TablePolicy] | None = field(default_factory=lambda: MappingProxyType({}))
    parts: tuple[Policy, ...] = ()

    @property
    def holds_data(self) -> bool:
        """Whether this is the policy of a site with data (one with table rules)."""
        return self.tables is not None

    def to_json(self) -> dict[str, Any]:
        """The effective rules as plain JSON values, sorted, for digests and ``--explain``."""
        return {
            "min_cell_size": self.min_cell_size,
            "analysts": "*" if self.analysts is None else sorted(self.analysts),
            "statement_kinds": sorted(self.statement_kinds),
            "max_groups": self.max_groups,
            "max_queries_per_hour": self.max_queries_per_hour,
            "allow_min_max": self.allow_min_max,
            "redact_at_or_below": self.redact_at_or_below,
            "round_counts": self.round_counts,
            "min_sites": self.min_sites,
            "model_min_df": self.model_min_df,
            "model_events_per_term": self.model_events_per_term,
            "dominance": None if self.dominance is None else list(self.dominance),
            "privacy": self.privacy.to_json(),
            "review": self.review,
            "review_hours": self.review_hours,
            "review_keep_hours": self.review_keep_hours,
            "tables": None
            if self.tables is None
            else {
                name: {
                    "columns": "*" if t.columns is None else sorted(t.columns),
                    "identifiers": sorted(t.identifiers),
                }
                for name, t in sorted(self.tables.items())
            },
        }

    @classmethod
    def from_json(cls, site: str, data: Mapping[str, Any]) -> Policy:
        """The inverse of :meth:`to_json`: how members learn each other's rules.

        Raises ``ConfigError`` on anything malformed (a peer's message is untrusted input).
        """
        try:
            tables = None
            if data["tables"] is not None:
                tables = {
                    str(name): TablePolicy(
                        columns=None if t["columns"] == "*" else frozenset(map(str, t["columns"])),
                        identifiers=frozenset(map(str, t["identifiers"])),
                    )
                    for name, t in dict(data["tables"]).items()
                }
            policy = cls(
                site=site,
                min_cell_size=int(data["min_cell_size"]),
                analysts=None if data["analysts"] == "*" else frozenset(map(str, data["analysts"])),
                statement_kinds=frozenset(map(str, data["statement_kinds"])),
                max_groups=int(data["max_groups"]),
                max_queries_per_hour=int(data["max_queries_per_hour"]),
                allow_min_max=bool(data["allow_min_max"]),
                redact_at_or_below=int(data["redact_at_or_below"]),
                round_counts=int(data["round_counts"]),
                min_sites=int(data["min_sites"]),
                model_min_df=int(data["model_min_df"]),
                model_events_per_term=int(data["model_events_per_term"]),
                dominance=None if data["dominance"] is None else _rule(data["dominance"]),
                privacy=PrivacyPolicy.from_json(data["privacy"]),
                review=str(data["review"]),
                review_hours=int(data["review_hours"]),
                review_keep_hours=int(data["review_keep_hours"]),
                tables=None if tables is None else MappingProxyType(tables),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"policy of site {site!r} is malformed: {exc}") from exc
        canonical = policy.to_json() == dict(data)
        if not canonical or policy.review not in REVIEW_MODES or min(policy.review_hours, policy.review_keep_hours) < 1:
            raise ConfigError(f"policy of site {site!r} has unexpected or non-canonical fields")
        return policy

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the rules: equal rules, equal digest (comments and
        key order in the file do not matter). Written in every audit entry."""
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()

    def _refuse(self, rule: str, message: str) -> PolicyRefusal:
        return PolicyRefusal(self.site, rule, message)

    def _each(self) -> tuple[Policy, ...]:
        """The sites' own policies, so that a refusal by a combined policy names the right site."""
        return self.parts or (self,)

    def _table_rules(self) -> tuple[tuple[Policy, Mapping[str, TablePolicy]], ...]:
        """The sites' own policies that have table rules (those of sites holding data), each
        with its rules; a site without data neither exposes nor restricts any table."""
        return tuple((p, p.tables) for p in self._each() if p.tables is not None)

    def check_analyst(self, analyst: str) -> None:
        """Refuse an analyst the site does not serve (rule ``analysts``)."""
        for p in self._each():
            if p.analysts is not None and analyst not in p.analysts:
                raise p._refuse("analysts", f"analyst {analyst!r} is not allowed")

    def check_kind(self, kind: str) -> None:
        """Refuse a statement kind the site does not allow (rule ``statement_kinds``)."""
        for p in self._each():
            if kind not in p.statement_kinds:
                allowed = ", ".join(sorted(p.statement_kinds)) or "none"
                raise p._refuse("statement_kinds", f"{kind!r} statements are not allowed (allowed: {allowed})")

    def check_table(self, table: str) -> None:
        """Refuse a table the site does not expose (rule ``tables``); with no site holding data,
        nothing is exposed."""
        rules = self._table_rules()
        if not rules:
            raise self._each()[0]._refuse("tables", f"table {table!r} is not exposed: no site holds data")
        for p, tables in rules:
            if table.lower() not in tables:
                raise p._refuse("tables", f"table {table!r} is not exposed")

    def check_column(self, table: str, column: str) -> None:
        """Refuse an identifier column (rule ``identifiers``) or an unexposed one (rule ``columns``)."""
        self.check_table(table)
        col = column.lower()
        # Identifiers first: "an identifier at site c" says more than "not exposed at site a".
        for p, tables in self._table_rules():
            if col in tables[table.lower()].identifiers:
                raise p._refuse("identifiers", f"column {table}.{column} is an identifier and never selectable")
        for p, tables in self._table_rules():
            columns = tables[table.lower()].columns
            if columns is not None and col not in columns:
                raise p._refuse("columns", f"column {table}.{column} is not exposed")

    def exposed_columns(self, table: str, columns: Iterable[str]) -> list[str]:
        """Of ``columns`` (a table's actual columns), those an analyst may use: exposed by
        every site's rules and not an identifier anywhere. Empty for an unexposed table."""
        out = []
        for column in columns:
            try:
                self.check_column(table, column)
            except PolicyRefusal:
                continue
            out.append(column)
        return sorted(out)

    def check_groups(self, groups: int) -> None:
        """Refuse a query with more output groups than allowed (rule ``max_groups``)."""
        for p in self._each():
            if groups > p.max_groups:
                raise p._refuse("max_groups", f"{groups} groups asked, at most {p.max_groups} allowed")

    def check_mode(self, dp: bool) -> None:
        """Refuse an exact query where a site requires DP mode, or a DP query where a site answers
        exactly only (rule ``mode``)."""
        check_mode(((p.site, p.privacy) for p in self._each()), dp)

    def check_epsilon(self, epsilon: float) -> None:
        """Refuse a DP query that asks for more than a site allows one query (rule
        ``epsilon_per_query``)."""
        for p in self._each():
            if epsilon > p.privacy.epsilon_per_query:
                raise p._refuse(
                    "epsilon_per_query", f"epsilon {epsilon:g} asked, at most {p.privacy.epsilon_per_query:g} per query"
                )

    def budget_site(self) -> str:
        """The site whose per-analyst budget (``epsilon``) is the smallest: the one an over-budget
        refusal names."""
        return min(self._each(), key=lambda p: p.privacy.epsilon).site

    def review_sites(self) -> tuple[str, ...]:
        """The sites whose data-protection officer must approve every result (``review = "dpo"``)."""
        return tuple(sorted(p.site for p in self._each() if p.review == "dpo"))

    def review_withheld_sites(self) -> tuple[str, ...]:
        """The sites whose data-protection officer must approve a result where the release rule
        withheld a cell (``review = "failing"`` or ``"dpo"``)."""
        return tuple(sorted(p.site for p in self._each() if p.review != "auto"))

    def check_reviewable(self, why: str) -> None:
        """Refuse, naming a reviewing site and rule ``review``, a statement whose result is not
        held for output review (DP and linkage statements; ``why`` says why): at a site that
        asks for review of every result, nothing leaves without its DPO's approval."""
        for p in self._each():
            if p.review == "dpo":
                raise p._refuse("review", f'{why} (review = "dpo" at this site)')

    def review_deadline_hours(self) -> int:
        """Hours a held result waits for approval: the shortest of the reviewing sites' (strictest)."""
        return min((p.review_hours for p in self._each() if p.review != "auto"), default=DEFAULT_REVIEW_HOURS)

    def check_min_max(self) -> None:
        """Refuse MIN/MAX, which reveal single records, unless allowed (rule ``allow_min_max``)."""
        for p in self._each():
            if not p.allow_min_max:
                raise p._refuse("allow_min_max", "MIN and MAX are not allowed (they reveal single records)")


def combine(policies: Iterable[Policy]) -> Policy:
    """The strictest combination: largest minimum cell size and redaction threshold, rounding to a
    multiple of every site's base (their least common multiple), the most contributing sites,
    the dominance rule with the largest n and the smallest p, review by a DPO if any site asks it
    (each such site must approve: ``review_sites``), smallest limits, only the analysts,
    kinds, tables and columns every site allows, identifiers of any site, MIN/MAX only if all allow.

    Table, column and identifier rules come from the sites that hold data only (a policy with
    ``tables=None`` has none); the result always has table rules (none exposed if no site holds
    data). Checks on the result delegate to the sites' own policies, so refusals name the site.
    """
    parts = tuple(q for p in policies for q in p._each())
    if not parts:
        raise ValueError("combine() needs at least one policy")
    bases = [p.round_counts for p in parts if p.round_counts]
    analysts: frozenset[str] | None = None
    for p in parts:
        if p.analysts is not None:
            analysts = p.analysts if analysts is None else analysts & p.analysts
    rules = [p.tables for p in parts if p.tables is not None]
    tables: dict[str, TablePolicy] = {}
    for name in set.intersection(*(set(t) for t in rules)) if rules else set():
        columns: frozenset[str] | None = None
        for t in rules:
            cols = t[name].columns
            if cols is not None:
                columns = cols if columns is None else columns & cols
        identifiers = frozenset().union(*(t[name].identifiers for t in rules))
        tables[name] = TablePolicy(
            columns=None if columns is None else columns - identifiers,
            identifiers=identifiers,
        )
    return Policy(
        site="+".join(p.site for p in parts),
        min_cell_size=max(p.min_cell_size for p in parts),
        analysts=analysts,
        statement_kinds=frozenset.intersection(*(p.statement_kinds for p in parts)),
        max_groups=min(p.max_groups for p in parts),
        max_queries_per_hour=min(p.max_queries_per_hour for p in parts),
        allow_min_max=all(p.allow_min_max for p in parts),
        redact_at_or_below=max(p.redact_at_or_below for p in parts),
        round_counts=math.lcm(*bases) if bases else 0,
        min_sites=max(p.min_sites for p in parts),
        model_min_df=max(p.model_min_df for p in parts),
        model_events_per_term=max(p.model_events_per_term for p in parts),
        dominance=dominance.combine([p.dominance for p in parts]),
        privacy=combine_privacy(p.privacy for p in parts),
        review=max((p.review for p in parts), key=REVIEW_MODES.index),
        review_hours=min(p.review_hours for p in parts),
        review_keep_hours=min(p.review_keep_hours for p in parts),
        tables=MappingProxyType(tables),
        parts=parts,
    )


def _names(section: Section, key: str, default: Any) -> frozenset[str] | None:
    """A list of names, or ``None`` for ``"*"`` (everything)."""
    if section.data.get(key) == "*":
        return None
    if key not in section and default is None:
        return None
    return frozenset(section.get_str_list(key, default))


def _table_policy(section: Section, name: str) -> TablePolicy:
    check_name(section, None, name, "table")
    section.only("columns", "identifiers")
    columns = _names(section, "columns", ())
    identifiers = frozenset(c.lower() for c in section.get_str_list("identifiers", ()))
    if columns is not None:
        columns = frozenset(c.lower() for c in columns)
        both = sorted(columns & identifiers)
        if both:
            raise section.error("columns", f"{both[0]!r} is also listed in identifiers")
    return TablePolicy(columns=columns, identifiers=identifiers)


def _rounding_base(section: Section) -> int:
    base = section.get_int("round_counts", 0, minimum=0)
    if base == 1 or base > MAX_ROUNDING_BASE:
        raise section.error("round_counts", f"must be 0 (off) or a base from 2 to {MAX_ROUNDING_BASE}, not {base}")
    return base


def _rule(value: Any) -> tuple[int, int]:
    """An (n, p) dominance rule from its JSON or TOML form; ValueError when it is not one."""
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(type(v) is int for v in value):
        raise ValueError("must be [n, p], two integers (n largest persons, p percent)")
    n, p = value
    why = dominance.check_rule(n, p)
    if why is not None:
        raise ValueError(why)
    return n, p


def _dominance(section: Section) -> tuple[int, int] | None:
    if "dominance" not in section:
        return None
    try:
        return _rule(section.data["dominance"])
    except ValueError as exc:
        raise section.error("dominance", str(exc)) from exc


def load_policy(path: Path | str, site: str, data: bool = True) -> Policy:
    """Load and validate a site's ``policy.toml``; ``site`` names the site in refusals.

    ``data=False`` (a site that holds no data): the file must have no ``[tables]`` rules, and
    the policy has none (``tables=None``)."""
    root = read_toml(path)
    root.only("policy", "privacy", "tables")
    p = root.section("policy")
    p.only(
        "min_cell_size",
        "analysts",
        "statement_kinds",
        "max_groups",
        "max_queries_per_hour",
        "allow_min_max",
        "redact_at_or_below",
        "round_counts",
        "min_sites",
        "model_min_df",
        "model_events_per_term",
        "dominance",
    )
    kinds = frozenset(p.get_str_list("statement_kinds", tuple(sorted(DEFAULT_STATEMENT_KINDS))))
    unknown = sorted(kinds - STATEMENT_KINDS)
    if unknown:
        raise p.error("statement_kinds", f"unknown kind {unknown[0]!r} (known: {', '.join(sorted(STATEMENT_KINDS))})")
    if "analysts" not in p:
        raise p.error("analysts", 'missing: list analyst names, or "*" for every analyst in the consortium')
    privacy = root.section("privacy", required=False)
    review = privacy.get_str("review", "auto")
    if review not in REVIEW_MODES:
        raise privacy.error("review", f'must be "auto", "failing" or "dpo", not {review!r}')
    declared = root.section("tables", required=False)
    tables = {name.lower(): _table_policy(t, name) for name, t in declared.subsections()}
    if not data and declared.data:
        raise declared.error(
            None, f"site {site!r} holds no data (data = false in the consortium file): remove its table rules"
        )
    return Policy(
        site=site,
        min_cell_size=p.get_int("min_cell_size", DEFAULT_MIN_CELL_SIZE, minimum=1),
        analysts=_names(p, "analysts", None),
        statement_kinds=kinds,
        max_groups=p.get_int("max_groups", DEFAULT_MAX_GROUPS, minimum=1),
        max_queries_per_hour=p.get_int("max_queries_per_hour", DEFAULT_MAX_QUERIES_PER_HOUR, minimum=0),
        allow_min_max=p.get_bool("allow_min_max", False),
        redact_at_or_below=p.get_int("redact_at_or_below", 0, minimum=0),
        round_counts=_rounding_base(p),
        min_sites=p.get_int("min_sites", 1, minimum=1),
        model_min_df=p.get_int("model_min_df", 10, minimum=1),
        model_events_per_term=p.get_int("model_events_per_term", 10, minimum=1),
        dominance=_dominance(p),
        privacy=load_privacy(privacy, also=("review", "review_hours", "review_keep_hours")),
        review=review,
        review_hours=privacy.get_int("review_hours", DEFAULT_REVIEW_HOURS, minimum=1),
        review_keep_hours=privacy.get_int("review_keep_hours", DEFAULT_KEEP_HOURS, minimum=1),
        tables=MappingProxyType(tables) if data else None,
    )


POLICY_TEMPLATE = """\
# Disclosure policy of site {site}. The strictest site wins: a query runs only if every site
# allows it, and pooled results use the largest min_cell_size of all sites. A refusal tells
# the analyst this site's name and the key below that refused.

[policy]
# Pooled cells with fewer records than this are suppressed (shown as <k).
min_cell_size = {min_cell_size}
# Analyst names allowed to query this site, or "*" for every analyst in the consortium.
analysts = []
# Statement kinds allowed: "aggregate", "per_site_breakdown", "model".
statement_kinds = ["aggregate", "model"]
# Most output groups (cells) one query may produce.
max_groups = {max_groups}
# Queries per analyst over any sliding hour.
max_queries_per_hour = {max_queries}
# MIN and MAX reveal single records; leave false unless you mean it.
allow_min_max = false
# Optional release options (the strictest site wins). Withhold released counts of 1 to N
# persons, as OpenSAFELY does with N = 7 (every release check then uses the larger of
# min_cell_size and N + 1); 0 turns it off.
redact_at_or_below = 0
# Round every released count to the nearest multiple of this base (5 as OpenSAFELY and ONS),
# computed on shares so the exact count is never opened; 0 turns it off. Margins are rounded
# on their own, so rounded cells need not add up to their rounded total.
round_counts = 0
# Withhold a cell unless at least this many sites have rows in it, so that no released number
# comes from one site alone; 1 turns it off.
min_sites = 1
# Models (LINEAR, LOGISTIC, POISSON): the least residual degrees of freedom, and the least
# events per term of a binary or count outcome (ACRO's defaults: 10 and 10).
model_min_df = 10
model_events_per_term = 10
# Dominance rule for sums, off unless set: withhold a SUM or AVG cell whose n largest per-person
# contributions make more than p percent of its total, e.g. dominance = [1, 85].
# dominance = [n, p]

[privacy]
# Differential privacy (docs/privacy-dp.md). mode: "exact" (exact release only), "dp" (only
# noised answers, %%mpc --dp), "both". The strictest site wins: the smallest epsilons and delta,
# the longest period, the fewest rows per person.
mode = "both"
# The most one DP query may spend, and each analyst's budget per period at this site.
epsilon_per_query = 1.0
epsilon = 10.0
delta = 1e-5
# The budget renews after this long: "365d", "30d", "12h", or "none" (never).
period = "365d"
# Rows one person contributes to one DP query at most (the rest are left out at random).
max_rows_per_person = 1
# Output review (docs/review-and-report.md): "auto" releases what passes the rules above;
# "failing" holds a result where the rules above withheld a cell as shares, at every committee
# member, until this site's data-protection officer approves releasing its cells of fewer than
# min_cell_size persons ('mpc-site-agent review approve ID'; differences and the other rules
# still withhold); "dpo" holds every exact result so, models too (DP and COUNT(DISTINCT
# PERSON) are refused). Unapproved after review_hours hours, it is
# discarded. An approved
# result whose receipt the analyst has not confirmed review_keep_hours after the last approval
# is discarded too (the smallest of all sites' applies).
review = "auto"
review_hours = {review_hours}
review_keep_hours = {review_keep_hours}

{tables}"""

TABLES_TEMPLATE = """\
# One section per table declared in agent.toml. Only the columns listed here are usable
# (or "*" for all). Identifier columns (names, record numbers, dates of birth...) can never
# be selected, whatever columns says.
#
# [tables.lung]
# columns = ["age", "sex", "stage", "time", "status"]
# identifiers = ["patient_id"]
"""

NO_DATA_TEMPLATE = """\
# This site holds no data, so this file has no [tables] sections: which tables and columns
# are usable is up to the sites that hold data. The rules above still apply to every query.
"""


def render_policy_template(site: str, data: bool = True) -> str:
    """A commented ``policy.toml`` for a new site: nothing exposed and nobody allowed until edited
    (``data=False``: a site without data, whose policy has no table rules)."""
    return POLICY_TEMPLATE.format(
        site=site,
        min_cell_size=DEFAULT_MIN_CELL_SIZE,
        max_groups=DEFAULT_MAX_GROUPS,
        max_queries=DEFAULT_MAX_QUERIES_PER_HOUR,
        review_hours=DEFAULT_REVIEW_HOURS,
        review_keep_hours=DEFAULT_KEEP_HOURS,
        tables=TABLES_TEMPLATE if data else NO_DATA_TEMPLATE,
    )
