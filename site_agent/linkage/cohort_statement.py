"""``SELECT COUNT(*), SUM(a.x), AVG(a.x) FROM cohort c LINK outcome a [WHERE ...]``: linked cohorts.

The cohort is every person whose linkage key is in table ``cohort`` at some site (rows meeting
the WHERE's conditions on ``c``); the statement aggregates every site's rows of ``outcome``
(meeting the conditions on ``a``) whose person's key is in the cohort. Items: ``COUNT(*)`` (the
linked outcome rows), ``COUNT(DISTINCT PERSON)`` (the linked persons), ``SUM(a.x)`` and
``AVG(a.x)`` of one integer column of ``outcome``. The protocol is
:mod:`site_agent.linkage.cohort`; the statement plugs into the linkage flow of
:mod:`.statement` (:class:`CohortCompiled` is a :class:`LinkageCompiled`: the agents agree on
its digest, run its local step and program, remember its query sets in the release ledger).

Both tables name a site's persons by their person column, the patient numbers the site's
linkage keys were prepared for (``linkage.duckdb``); a row whose person has no key is left out.
Each condition of the WHERE (its AND-ed parts) names columns of one table, qualified by its
alias. Its query sets for the release ledger are two: each site's cohort persons and its
outcome persons (with a key), so a second statement that drops one person from either is
withheld.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlglot
import sqlglot.expressions as exp

from ..errors import QuerySyntaxError, UnsupportedQuery
from ..mpc.fixed import decode_int
from ..mpc.party import Party, Protocol
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..mpc.sharing import reconstruct
from ..privacy.ledger import Membership, person_hashes
from ..query.catalog import DisclosureRules, Schema
from ..query.plan import person_rows_sql
from . import cohort
from .declaration import Linkage, read_person_keys
from .statement import KIND, PERSON, LinkageCompiled, Reveal, _is_person_count, ledger_bound

ROWS, PERSONS, SUM, AVG = "rows", "persons", "sum", "avg"


def _link_keyword(text: str) -> tuple[int, int] | None:
    """Where the statement's ``LINK`` keyword is (start, end), if it has one."""
    try:
        tokens = sqlglot.tokenize(text, read="duckdb")
    except sqlglot.errors.TokenError:
        return None
    return next(
        ((t.start, t.end) for t in tokens if t.token_type == sqlglot.TokenType.VAR and t.text.upper() == "LINK"), None
    )


def is_cohort_query(text: str) -> bool:
    """Whether ``text`` links a cohort (``FROM c LINK a``): then only :func:`compile_cohort` compiles
    it. Not where ``link`` is a name (a column, an alias): then the text parses as plain SQL."""
    if _link_keyword(text) is None:
        return False
    try:
        sqlglot.parse_one(text, dialect="duckdb")
    except sqlglot.errors.ParseError:
        return True
    return False


class CohortCompiled(LinkageCompiled):
    """A compiled linked-cohort statement: the same at every member for the same text."""

    @property
    def query_sets(self) -> int:
        return 2

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.data["outputs"]]

    @property
    def reveals(self) -> list[Reveal]:
        m = len(self.data["columns"]) + 1
        return [
            Reveal(
                "set sizes (per member: distinct linkage keys of its cohort persons, of its outcome persons)", (3, 2)
            ),
            Reveal("sort comparisons (a uniformly random permutation whatever the data)", (0,)),
            Reveal("linked persons and the linked outcome rows' totals, to the analyst, where released", (m,)),
            Reveal("stop flags of the release rule, to the analyst", (m,)),
        ]

    def explain(self) -> str:
        d = self.data
        k, sites = d["min_cell_size"], d["sites"]
        return "\n".join(
            [
                f"Plan {self.digest[:16]} for:",
                *("    " + t for t in d["query"].strip().splitlines()),
                "",
                f"Linked cohort: the persons of table {d['cohort']['table']} at any site, their rows of table "
                f"{d['outcome']['table']} at every site,",
                "matched on the linkage keys (mpc-site-agent linkage prepare). Each site, locally:",
                f"   [cohort]  {d['cohort']['sql']}",
                f"   [outcome] {d['outcome']['sql']}",
                "its distinct keys of cohort persons, and per outcome person's key the sums over its outcome rows of: "
                + ", ".join(d["columns"])
                + ".",
                "Each member announces its numbers of cohort and outcome keys and inputs its records as shares;",
                "the committee sorts them with a shuffle sort (comparisons opened: a uniformly random permutation",
                f"whatever the data), compares each record with the {cohort.window(sites)} before it on shares, "
                "flags the outcome records",
                "whose key is in the cohort (the flags stay shares: no site learns which of its records matched)",
                "and sums the flagged records.",
                f"Release rule: every output withheld unless the linked persons are 0 or at least {k}; and where "
                "the cohort or outcome persons",
                f"differ from a set released to the analyst before by 1 to {ledger_bound(sites, k) - 1} site records "
                "(the release ledger).",
                "",
                "Revealed:",
                *(f"  - {r.name}" for r in self.reveals),
                f"Outputs: {', '.join(self.labels)}.",
            ]
        )

    def opened(self, meta: dict[str, Any]) -> np.ndarray:
        """Both query sets, always (as :meth:`LinkageCompiled.opened`)."""
        return np.ones((2, 1), dtype=bool)

    def local(self, con: Any, keys_path: Path, holds_data: bool = True) -> tuple[cohort.SiteRecords, Membership]:
        """This site's records (:func:`site_agent.linkage.cohort.site_records`) and its two query
        sets: cohort persons and outcome persons with a key. Nothing leaves here."""
        v = len(self.data["columns"])
        if not holds_data:
            empty = np.zeros(0, dtype=np.uint64)
            none = Membership.of([(empty, np.zeros((0, 1), np.int64))] * 2, 1)
            return cohort.SiteRecords(empty, empty, np.zeros((v, 0), dtype=np.uint64)), none
        persons, keys = read_person_keys(keys_path)
        known = person_hashes(persons)
        order = np.argsort(known)
        known, keys = known[order], keys[order]

        def keyed(rows: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            hashes = person_hashes(np.ma.getdata(rows["person"]))
            at = np.minimum(np.searchsorted(known, hashes), max(known.size - 1, 0))
            found = known[at] == hashes if known.size else np.zeros(hashes.size, dtype=bool)
            return hashes[found], keys[at[found]], found

        c_hash, c_keys, _ = keyed(con.execute(self.data["cohort"]["sql"]).fetchnumpy())
        rows = con.execute(self.data["outcome"]["sql"]).fetchnumpy()
        o_hash, o_keys, found = keyed(rows)
        columns = [np.ones(int(found.sum()), dtype=np.int64)]
        if v > 1:
            value = rows["v0"]
            missing = np.ma.getmaskarray(value)[found]
            columns += [(~missing).astype(np.int64), np.where(missing, 0, np.ma.getdata(value)[found]).astype(np.int64)]
        members = Membership.of(
            [(np.unique(h), np.zeros((np.unique(h).size, 1), np.int64)) for h in (c_hash, o_hash)], 1
        )
        return cohort.site_records(c_keys, o_keys, columns), members

    def program(self, p: Party, mine: Any, differences: U64 | None = None) -> Protocol[tuple[AShare, dict[str, Any]]]:
        """The MPC part at one member: its shares of [kept numbers, stop flags] and the public meta."""
        d = self.data
        kept, flags = yield from cohort.committee_release(
            p,
            mine,
            d["sites"],
            d["min_cell_size"],
            differences=None if differences is None or not differences.size else differences.reshape(2, -1),
            ledger_k=ledger_bound(d["sites"], d["min_cell_size"]),
        )
        meta = {"kind": KIND, "plan": d, "digest": self.digest, "labels": self.labels}
        return AShare.concat([kept, flags]), meta


def _refuse(message: str) -> UnsupportedQuery:
    return UnsupportedQuery(f'{message} (docs/linkage.md, "Linked cohorts")')


def compile_cohort(
    text: str, linkage: Linkage | None, rules: DisclosureRules, sites: int, schema: Schema
) -> CohortCompiled:
    """Check the statement's shape and the policy, and compile it (QueryError or PolicyRefusal)."""
    where_link = _link_keyword(text)
    assert where_link is not None
    rewritten = text[: where_link[0]] + "CROSS JOIN" + text[where_link[1] + 1 :]
    try:
        tree = sqlglot.parse_one(rewritten, dialect="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise QuerySyntaxError(str(exc).splitlines()[0].replace("CROSS JOIN", "LINK"), text=text) from None
    if linkage is None:
        raise UnsupportedQuery("LINK needs a [linkage] section in the consortium's schema.toml")
    joins = tree.args.get("joins") or []
    source = tree.args.get("from_")
    if not isinstance(tree, exp.Select) or source is None or len(joins) != 1 or joins[0].args.get("on"):
        raise _refuse("LINK joins two tables: SELECT ... FROM cohort c LINK outcome a [WHERE ...]")
    clauses = {"group": "GROUP BY", "having": "HAVING", "order": "ORDER BY", "limit": "LIMIT", "offset": "OFFSET"}
    for clause, words in {**clauses, "with_": "WITH", "distinct": "DISTINCT"}.items():
        if tree.args.get(clause):
            raise _refuse(f"a LINK statement takes no {words} yet")
    tables = [source.this, joins[0].this]
    if not all(isinstance(t, exp.Table) for t in tables):
        raise _refuse("LINK links two tables of the schema")
    names = [t.name.lower() for t in tables]
    aliases = [t.alias_or_name.lower() for t in tables]
    if aliases[0] == aliases[1]:
        raise _refuse("the two tables of a LINK statement need different aliases")
    for name in names:
        table = schema.tables.get(name)
        if table is not None and table.person is None:
            raise _refuse(f"table {name!r} declares no person column, so its rows cannot be linked to persons")
    value, columns, outputs = _items(tree, aliases[1])
    conditions: list[list[exp.Expr]] = [[], []]
    where = tree.args.get("where")
    parts = [] if where is None else list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    for part in parts:
        named = {c.table.lower() for c in part.find_all(exp.Column)}
        if "" in named or not named or len(named) > 1 or not named <= set(aliases):
            raise _refuse(
                "each condition of a LINK statement's WHERE names columns of one table, qualified by its alias"
            )
        conditions[aliases.index(named.pop())].append(part)
    from ..models.statement import validate_source  # the query validator, as model statements use it

    sides = []
    for i, (name, alias) in enumerate(zip(names, aliases, strict=True)):
        tail = f"{name} AS {alias}" + (
            f" WHERE {exp.and_(*conditions[i]).sql(dialect='duckdb')}" if conditions[i] else ""
        )
        query, resolved = validate_source(
            tail, [value.sql(dialect="duckdb") if i and value is not None else "1"], schema, rules, None
        )
        if i and value is not None:
            column = schema.tables[name].columns[value.name.lower()]
            if column.dtype != "integer":
                raise _refuse(f"SUM and AVG of a LINK statement take an integer column, not {column.dtype}")
        sides.append({"table": name, "sql": person_rows_sql(query, resolved if i and value is not None else [])})
    if rules.policy is not None:
        rules.policy.check_kind("aggregate")
        for name in names:
            rules.policy.check_table(name)
    if rules.round_counts or rules.redact_at_or_below or rules.min_sites > 1 or (rules.dominance and value is not None):
        raise _refuse("a LINK statement does not apply round_counts, redaction, min_sites or dominance yet")
    if sites < 2:
        raise UnsupportedQuery("record linkage needs two sites holding data or more")
    return CohortCompiled(
        {
            "kind": KIND,
            "link": True,
            "query": text,
            "cohort": sides[0],
            "outcome": sides[1],
            "columns": columns,
            "outputs": outputs,
            "sites": sites,
            "min_cell_size": rules.min_cell_size,
            "labels": [label for label, _ in outputs],
        }
    )


def _items(tree: exp.Select, outcome: str) -> tuple[exp.Column | None, list[str], list[list[str]]]:
    """The SELECT items: the value column (or None), the summed columns' names and the outputs
    as [label, what] (``what``: rows, persons, sum or avg)."""
    value: exp.Column | None = None
    outputs = []
    for item in tree.expressions:
        e = item.unalias()
        label = item.alias or e.sql(dialect="duckdb").lower()
        if isinstance(e, exp.Count) and isinstance(e.this, exp.Star):
            outputs.append([label, ROWS])
        elif _is_person_count(e):
            outputs.append([item.alias or f"distinct_{PERSON}s", PERSONS])
        elif isinstance(e, (exp.Sum, exp.Avg)) and isinstance(e.this, exp.Column):
            col = e.this
            if col.table.lower() != outcome:
                raise _refuse(f"SUM and AVG of a LINK statement take a column of the outcome table, as {outcome}.x")
            if value is not None and value.name.lower() != col.name.lower():
                raise _refuse("a LINK statement sums one column of the outcome table")
            value = col
            outputs.append([label, SUM if isinstance(e, exp.Sum) else AVG])
        else:
            raise _refuse("a LINK statement takes COUNT(*), COUNT(DISTINCT PERSON), SUM(a.x) and AVG(a.x) only")
    columns = ["1 (rows)"] + ([f"[{value.name} is not NULL]", value.name] if value is not None else [])
    return value, columns, outputs


def assemble(meta: dict[str, Any], member_shares: list[AShare]) -> pd.DataFrame:
    """The analyst's side: one row, every output missing where the release rule withheld them."""
    plan = meta["plan"]
    opened = reconstruct([s.ravel() for s in member_shares])
    m = len(plan["columns"]) + 1
    if opened.size != 2 * m:
        raise UnsupportedQuery("the linked cohort's result does not have the plan's size")
    withheld = bool(opened[m])
    persons, rows, *rest = (int(v) for v in decode_int(opened[:m]))
    known, total = (rest[0], rest[1]) if rest else (0, 0)
    number = {PERSONS: persons, ROWS: rows, SUM: total, AVG: total / known if known else None}
    frame = pd.DataFrame(
        {
            label: pd.array([None if withheld else number[what]], dtype="Float64" if what == AVG else "Int64")
            for label, what in plan["outputs"]
        }
    )
    frame.attrs["plan_digest"] = meta["digest"]
    frame.attrs["reveals"] = [{"name": r.name, "what": "declared"} for r in CohortCompiled(plan).reveals]
    frame.attrs["suppressed"] = {label: [withheld] for label, _ in plan["outputs"]}
    return frame
