"""``SELECT COUNT(DISTINCT PERSON) FROM t [WHERE ...]``: pooled distinct persons over the linkage keys.

``PERSON`` is a pseudo-column (like ``SITE``): the person as the linkage keys identify it across
sites. The statement compiles only for the consortium's linked table, without GROUP BY or joins,
and answers one row: the distinct persons (under the query's alias, ``distinct_persons`` by
default) and the persons seen at exactly 1, 2, ... and S or more sites. Its WHERE is validated
like any query's (:func:`site_agent.models.statement.validate_source`: tables, exposed columns,
identifiers, policy); each site inputs the keys of its persons whose rows meet it
(:func:`selected_keys`), persons without a key left out.

Its query set (each site's persons it counts) goes to the analyst's release ledger like an
aggregate's: each site inputs, as shares, its differences with the sets released to the analyst
before, and the release rule withholds every count when a pooled difference could isolate
fewer than k persons (:func:`site_agent.linkage.dedup.release`); the set is remembered once the
statement ran (:meth:`LinkageCompiled.opened`). Every member compiles it alike into a
:class:`LinkageCompiled` whose digest the members compare; its program is
:func:`site_agent.linkage.dedup.committee_release`, and the member's shares of the kept counts
and stop flags go to the analyst, who reconstructs them (:func:`assemble`). Nothing is opened to
the members but the set sizes and the sort's comparisons (docs/linkage.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlglot
import sqlglot.expressions as exp

from ..errors import QuerySyntaxError, UnsupportedQuery
from ..mpc.party import Party, Protocol
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..mpc.sharing import reconstruct
from ..privacy.ledger import Membership, person_hashes
from ..query.catalog import DisclosureRules, Schema
from ..query.plan import whole_set_ledger
from . import dedup
from .declaration import Linkage, read_person_keys

PERSON = "person"
KIND = "linkage"


@dataclass(frozen=True)
class Reveal:
    """A declared reveal as the audit log records it: name and shape, never values."""

    name: str
    shape: tuple[int, ...]


def _is_person_count(e: exp.Expression) -> bool:
    if not isinstance(e, exp.Count) or not isinstance(e.this, exp.Distinct):
        return False
    args = e.this.expressions
    return len(args) == 1 and isinstance(args[0], exp.Column) and not args[0].table and args[0].name.lower() == PERSON


def is_linkage_query(text: str, schema: Schema) -> bool:
    """Whether ``text`` counts ``DISTINCT PERSON`` (then only :func:`compile_linkage` compiles it).

    Not where a table of the query has a real column called ``person``: that one is meant."""
    try:
        tree = sqlglot.parse_one(text, dialect="duckdb")
    except sqlglot.errors.ParseError:
        return False
    tables = [schema.tables.get(t.name.lower()) for t in tree.find_all(exp.Table)]
    if any(t is not None and PERSON in t.columns for t in tables):
        return False
    return any(_is_person_count(c) for c in tree.find_all(exp.Count))


@dataclass(frozen=True)
class LinkageCompiled:
    """A compiled linkage statement at one member: the same at every member for the same text."""

    data: dict[str, Any]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()

    @property
    def kind(self) -> str:
        return KIND

    @property
    def dp(self) -> None:
        """Linkage statements are answered exactly (DP mode refuses them)."""
        return None

    @property
    def labels(self) -> list[str]:
        return list(self.data["labels"])

    @property
    def reveals(self) -> list[Reveal]:
        m = len(self.labels)
        return [
            Reveal("set sizes (distinct linkage keys per member, of the persons the WHERE selects)", (3,)),
            Reveal("sort comparisons (a uniformly random permutation whatever the data)", (0,)),
            Reveal("counts, to the analyst, where released", (m,)),
            Reveal("stop flags of the release rule, to the analyst", (m,)),
        ]

    def explain(self) -> str:
        d = self.data
        return "\n".join(
            [
                f"Plan {self.digest[:16]} for:",
                *("    " + t for t in d["query"].strip().splitlines()),
                "",
                f"Record linkage on table {d['table']}: each site's linkage keys (mpc-site-agent linkage prepare)",
                "of its persons whose rows meet the WHERE (its persons and their keys, each site locally):",
                f"   [persons] {d['ledger']['sql']}",
                "Each member announces its number of distinct keys and inputs its keys as shares; the committee",
                "sorts them with a shuffle sort (comparisons opened: a uniformly random permutation whatever",
                f"the data), compares each key with the {dedup.window(d['sites'])} before it on shares, and counts.",
                f"Release rule: each count 0 or at least {d['min_cell_size']} persons; the parts "
                "(persons at 1, 2, ... sites) are released together or not at all; every count withheld",
                "where the persons differ from a set released to the analyst before by 1 to "
                f"{ledger_bound(d['sites'], d['min_cell_size']) - 1} site records",
                f"(the release ledger: fewer than {d['min_cell_size']} persons at {d['sites']} sites each).",
                "",
                "Revealed:",
                *(f"  - {r.name}" for r in self.reveals),
                f"Outputs: {', '.join(self.labels)}.",
            ]
        )

    @property
    def query_sets(self) -> int:
        """How many query sets it puts in the release ledger (its differences are that many
        times the remembered sets)."""
        return 1

    def local(self, con: Any, keys_path: Path, holds_data: bool = True) -> tuple[Any, Membership]:
        """This site's input to :meth:`program` and its query sets (:func:`selected_keys`)."""
        return selected_keys(self, con, keys_path, holds_data)

    def opened(self, meta: dict[str, Any]) -> np.ndarray:
        """The query sets the statement opened, for the release ledger: its one set, always. The
        stop flags go to the analyst as shares, so a member cannot tell a withheld result from a
        released one; remembering the set either way is the safe side (later checks only stricter)."""
        return np.ones((1, 1), dtype=bool)

    def program(self, p: Party, mine: Any, differences: U64 | None = None) -> Protocol[tuple[AShare, dict[str, Any]]]:
        """The MPC part at one member: its shares of [kept counts, stop flags] and the public meta.

        ``mine`` is None where the site's keys could not be read: every member fails alike.
        ``differences``: this site's differences with the analyst's remembered sets (as many at
        every member: the ledger digest is agreed first)."""
        kept, flags = yield from dedup.committee_release(
            p,
            mine,
            self.data["sites"],
            self.data["min_cell_size"],
            differences=differences,
            ledger_k=ledger_bound(self.data["sites"], self.data["min_cell_size"]),
        )
        meta = {"kind": KIND, "plan": self.data, "digest": self.digest, "labels": self.labels}
        return AShare.concat([kept, flags]), meta


def ledger_bound(sites: int, k: int) -> int:
    """The release ledger's bound for a linkage statement: a pooled difference of 1 to
    S (k - 1) site records withholds the counts. The ledger tells persons apart per site (one
    person at S sites is S records), and these counts are about persons across sites, so fewer
    than k differing persons may be up to S (k - 1) records."""
    return sites * (k - 1) + 1


def compile_linkage(
    text: str, linkage: Linkage | None, rules: DisclosureRules, sites: int, schema: Schema
) -> LinkageCompiled:
    """Check the statement's shape and the policy, and compile it (QueryError or PolicyRefusal)."""
    try:
        tree = sqlglot.parse_one(text, dialect="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise QuerySyntaxError(str(exc).splitlines()[0], text=text) from None
    if linkage is None:
        raise UnsupportedQuery("COUNT(DISTINCT PERSON) needs a [linkage] section in the consortium's schema.toml")
    if not isinstance(tree, exp.Select) or len(tree.expressions) != 1:
        raise UnsupportedQuery("COUNT(DISTINCT PERSON) is a statement of its own: SELECT COUNT(DISTINCT PERSON) FROM t")
    item = tree.expressions[0]
    alias = item.alias if isinstance(item, exp.Alias) else ""
    if not _is_person_count(item.unalias()):
        raise UnsupportedQuery("PERSON may appear only as COUNT(DISTINCT PERSON)")
    clauses = {"group": "GROUP BY", "having": "HAVING", "joins": "JOIN", "order": "ORDER BY", "limit": "LIMIT"}
    for clause, words in {**clauses, "offset": "OFFSET", "with_": "WITH"}.items():
        if tree.args.get(clause):
            raise UnsupportedQuery(f"COUNT(DISTINCT PERSON) takes no {words} yet (docs/linkage.md)")
    source = tree.args.get("from_")
    if source is None or not isinstance(source.this, exp.Table) or source.this.name.lower() != linkage.table:
        raise UnsupportedQuery(f"COUNT(DISTINCT PERSON) counts the linked table {linkage.table!r}")
    where = tree.args.get("where")
    tail = source.this.sql(dialect="duckdb") + (f" WHERE {where.this.sql(dialect='duckdb')}" if where else "")
    from ..models.statement import validate_source  # the query validator, as model statements use it

    query, _ = validate_source(tail, ["1"], schema, rules, None)
    ledger = whole_set_ledger(query)
    assert ledger is not None  # the linked table declares its person column (load_linkage)
    if rules.policy is not None:
        rules.policy.check_kind("aggregate")
        rules.policy.check_table(linkage.table)
    if rules.round_counts or rules.redact_at_or_below or rules.min_sites > 1:
        raise UnsupportedQuery("COUNT(DISTINCT PERSON) does not apply round_counts, redaction or min_sites yet")
    if sites < 2:
        raise UnsupportedQuery("record linkage needs two sites holding data or more")
    labels = dedup.labels(sites)
    labels[0] = alias or "distinct_persons"
    return LinkageCompiled(
        {
            "kind": KIND,
            "query": text,
            "table": linkage.table,
            "parts": list(linkage.parts),
            "sites": sites,
            "min_cell_size": rules.min_cell_size,
            "labels": labels,
            "ledger": ledger,
        }
    )


def selected_keys(plan: LinkageCompiled, con: Any, keys_path: Path, holds_data: bool = True) -> tuple[U64, Membership]:
    """This site's linkage keys of the persons the statement's WHERE selects (persons without a
    key left out), and those persons as the statement's query set for the release ledger (one
    set, one cell). ``con`` is the site's engine (the planner's connector); nothing leaves here."""
    if not holds_data:
        return np.zeros(0, dtype=np.uint64), Membership.of([(np.zeros(0, np.uint64), np.zeros((0, 1), np.int64))], 1)
    rows = con.execute(plan.data["ledger"]["sql"]).fetchnumpy()
    inside = np.ma.filled(rows["m0"], False).astype(bool)
    chosen = np.unique(person_hashes(np.ma.getdata(rows["person"])[inside]))
    persons, keys = read_person_keys(keys_path)
    hashes = person_hashes(persons)
    keep = np.isin(hashes, chosen)
    counted = np.unique(hashes[keep])
    return keys[keep], Membership.of([(counted, np.zeros((counted.size, 1), np.int64))], 1)


def assemble(meta: dict[str, Any], member_shares: list[AShare]) -> pd.DataFrame:
    """The analyst's side: one row, the withheld counts as missing values."""
    opened = reconstruct([s.ravel() for s in member_shares])
    m = len(meta["labels"])
    if opened.size != 2 * m:
        raise UnsupportedQuery("the linkage result does not have the plan's size")
    values = [pd.NA if opened[m + i] else int(opened[i]) for i in range(m)]
    frame = pd.DataFrame([values], columns=meta["labels"]).astype("Int64")
    frame.attrs["plan_digest"] = meta["digest"]
    frame.attrs["reveals"] = [{"name": r.name, "what": "declared"} for r in LinkageCompiled(meta["plan"]).reveals]
    frame.attrs["suppressed"] = {c: [bool(f)] for c, f in zip(meta["labels"], opened[m:], strict=True)}
    return frame
