"""Parse and validate a %%mpc query into a :class:`Query`: tables, filter, public group keys, aggregates.

The language is one ``SELECT`` over one site's own tables (joins allowed), with an optional
``WHERE`` and ``GROUP BY`` (plain, ``ROLLUP(...)`` or ``CUBE(...)``). Every select item is a
group key or an aggregate; see docs/query-language.md for the list. ``HAVING``, ``ORDER BY``,
``LIMIT`` and ``OFFSET`` refer to released outputs only and become the query's :class:`Post`,
applied to the released table on the analyst's side (:mod:`.post`). Validation is strict and
precise because the local SQL runs inside a hospital: only allow-listed expression nodes and
functions get through, every column is resolved against the common schema, and an identifier
column may appear only in join conditions and COUNT(DISTINCT ...).

``SITE`` is a reserved pseudo-column: the committee site a row belongs to, with the committee's
site names (in committee order) as its public domain. It may only be a group key; it never
enters a site's SQL (every site's rows fall in its own SITE cell, placed at execution).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from typing import NoReturn

import sqlglot
import sqlglot.expressions as exp

from ..errors import QueryError, QuerySyntaxError, UnknownName, UnsupportedQuery
from ..privacy.contributions import Branch, branches, plain_columns
from ..privacy.persons import check_join, identifier_uses
from .catalog import SITE, Column, DisclosureRules, KeyValue, Schema, Table
from .post import HAVING_NODES, OrderItem, Post, output_column

DIALECT = "duckdb"

# Expression nodes a query may contain besides function calls (checked by _check_nodes).
_ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Tuple,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.IntDiv, exp.Neg,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is, exp.In, exp.Between,
    exp.Like, exp.ILike, exp.Not, exp.DataType, exp.Interval, exp.Var,
)  # fmt: skip

# The one function allow-list (checked by _check_functions on every function node, by exact
# type: a sqlglot subclass is a different function). Scalar functions, anywhere: the list of
# docs/query-language.md (sqlglot also parses AND, OR, CASE, IF and CAST as functions).
_SCALAR_FUNCTIONS: frozenset[type[exp.Func]] = frozenset({
    exp.And, exp.Or, exp.Case, exp.If, exp.Cast, exp.TryCast,
    exp.DateDiff, exp.DateAdd, exp.DateSub, exp.DateTrunc, exp.TimestampTrunc, exp.Extract, exp.CurrentDate,
    exp.Year, exp.Month, exp.Day, exp.Coalesce, exp.Abs, exp.Round, exp.Floor, exp.Ceil,
    exp.Greatest, exp.Least, exp.Lower, exp.Upper, exp.Length, exp.Substring,
})  # fmt: skip
# The arguments a listed function may have (default: one, ``this``): sqlglot accepts more for
# some (CEIL(x, 2), LENGTH(x, 'utf8'), time zones) and writes them out as further functions.
_FUNCTION_ARGS: dict[type[exp.Func], frozenset[str]] = {
    cls: frozenset(args.split())
    for classes, args in (
        ((exp.And, exp.Or, exp.Extract, exp.PercentileCont), "this expression"),
        ((exp.Case,), "this ifs default"),
        ((exp.If,), "this true false"),
        ((exp.Cast, exp.TryCast), "this to"),
        ((exp.Coalesce, exp.Greatest, exp.Least), "this expressions"),
        ((exp.DateAdd, exp.DateSub, exp.DateDiff), "this expression unit"),
        ((exp.DateTrunc, exp.TimestampTrunc), "this unit"),
        ((exp.Round,), "this decimals"),
        ((exp.Substring,), "this start length"),
    )
    for cls in classes
}
# Aggregates the parser turns into Aggregate kinds: only as select items (PERCENTILE_CONT also
# inside its WITHIN GROUP). An aggregate nested in a select item is refused by _aggregate.
_AGGREGATE_FUNCTIONS: frozenset[type[exp.Func]] = frozenset({
    exp.Count, exp.Sum, exp.Avg, exp.Variance, exp.VariancePop, exp.Stddev, exp.StddevSamp, exp.StddevPop,
    exp.Median, exp.PercentileCont, exp.Min, exp.Max,
})  # fmt: skip
# The language's own aggregates (parsed as anonymous functions): only a whole select item.
_CUSTOM_AGGREGATES = frozenset({"PROPORTION", "RATE"})
# Where a unit word (Var) or a type (DataType) may stand.
_VAR_PARENTS = (exp.Interval, exp.Extract, exp.DateDiff, exp.DateAdd, exp.DateSub, exp.DateTrunc, exp.TimestampTrunc)
_CLAUSES = frozenset({"expressions", "from_", "joins", "where", "group"})
_POST_CLAUSES = ("having", "order", "limit", "offset")
_CLAUSE_NAMES = {"where": "WHERE", "joins": "JOIN ... ON", "group": "GROUP BY"}

_PREDICATES = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is, exp.In, exp.Between,
    exp.Like, exp.ILike, exp.Not, exp.And, exp.Or, exp.Boolean,
)  # fmt: skip

AGGREGATE_KINDS = (
    "count_star", "count", "count_distinct", "sum", "avg", "var", "std", "quantile",
    "min", "max", "proportion", "rate",
)  # fmt: skip


@dataclass(frozen=True)
class Key:
    """A group key: output name, resolved expression and public domain (enumerated in order).

    ``site`` marks the ``SITE`` pseudo-column (domain: the committee's site names).
    """

    name: str
    expr: exp.Expression
    domain: tuple[KeyValue, ...]
    site: bool = False


@dataclass(frozen=True)
class Aggregate:
    """One aggregate of the select list.

    ``args`` are the value expressions (one, or events and person-time for ``rate``).
    ``q`` is the quantile for ``quantile``, ``ddof`` the delta degrees of freedom for
    ``var``/``std``, ``per`` the person-time multiplier for ``rate``, ``grid`` the public
    histogram grid for ``quantile``. ``branches`` are the query sets the value is computed
    over (:func:`site_agent.privacy.contributions.branches`); none for ``COUNT(*)``.
    """

    name: str
    kind: str
    args: tuple[exp.Expression, ...]
    q: float | None = None
    ddof: int = 1
    per: float = 1.0
    grid: tuple[float, float, float] | None = None
    branches: tuple[Branch, ...] = ()


@dataclass(frozen=True)
class Query:
    """A validated query: what the planner needs, with resolved (qualified) expressions."""

    text: str
    source: exp.Select  # FROM and JOINs only, tables qualified by alias
    where: exp.Expression | None
    keys: tuple[Key, ...]
    grouping_sets: tuple[tuple[int, ...], ...]
    aggregates: tuple[Aggregate, ...]
    post: Post = field(default_factory=Post)  # HAVING, ORDER BY, LIMIT, OFFSET: applied to released values only
    person: str | None = None  # the FROM table's person column, qualified (``alias.column``)
    derived: tuple[tuple[str, str], ...] = ()
    """Derived columns the query reads (``alias.column``, their schema expression over that
    alias): the planner writes the expression in the local SQL in place of the column."""


def parse_query(text: str, schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None = None) -> Query:
    """Parse ``text`` and validate it against ``schema`` and ``rules``; raise a :class:`QueryError`.

    ``sites`` are the committee's site names in committee order: the domain of ``SITE``
    (without them a query using ``SITE`` is an :class:`UnsupportedQuery`).
    """
    return _Validator(text, schema, rules, sites).run()


CONDITIONS: tuple[type[exp.Expr], ...] = (
    exp.Case,
    exp.If,
    exp.Predicate,  # comparisons, IS, IN, BETWEEN, LIKE
    exp.Connector,  # AND, OR
    exp.Not,
    exp.Boolean,
)
"""Nodes a numeric derived column may not hold: a condition inside a declared column would turn a
sum of it into a count of the persons meeting the condition that no release check sees (a
query's own conditions are split into query sets by :mod:`site_agent.privacy.contributions`)."""


def derived_expression(text: str, table: Table, key_only: bool = False) -> str:
    """A derived column's expression (schema.toml ``[tables.t.derived]``), checked once when the
    schema loads: one scalar expression over ``table``'s stored columns with the query language's
    nodes and its one function allow-list, no aggregate, no person column, and no condition
    (:data:`CONDITIONS`) unless it is ``key_only`` (a text column: a group key or a WHERE term,
    never summed); returned in canonical SQL with unqualified columns. Raises
    :class:`QueryError` with the reason.

    It is checked as the WHERE condition of a probe query, so exactly the analyst's rules apply;
    what an analyst may not write in an aggregate (a product of columns) is what a consortium
    declares a derived column for.
    """
    try:
        node = sqlglot.parse_one(text, read=DIALECT)
    except (sqlglot.ParseError, sqlglot.TokenError) as err:
        raise _syntax_error(text, err) from None
    if isinstance(node, exp.Query) or node.find(exp.Column) is None:
        raise QueryError(f"{text!r} must be an expression over the table's columns")
    stored = Table.of(table.name, list(table.stored.values()))
    probe = f"SELECT COUNT(*) FROM {table.name} WHERE ({node.sql(DIALECT)}) IS NOT NULL"
    where = parse_query(probe, Schema.of([stored]), DisclosureRules()).where
    test = where.this if isinstance(where, exp.Not) else where  # IS NOT NULL reads as NOT (... IS NULL)
    assert isinstance(test, exp.Is) and isinstance(test.this, exp.Paren)
    expr = test.this.this
    condition = None if key_only else next(expr.find_all(*CONDITIONS), None)
    if condition is not None:
        raise QueryError(
            f"{condition.sql(DIALECT)!r}: a numeric derived column is a value, not a condition (a text one may "
            "be); write conditions in the query, where the release rule checks the persons on each side"
        )
    for col in expr.find_all(exp.Column):
        col.set("table", None)
    return str(expr.sql(DIALECT))


def is_site(node: exp.Expr | None) -> bool:
    """Whether ``node`` is the ``SITE`` pseudo-column (an unqualified column named site)."""
    return isinstance(node, exp.Column) and not node.table and node.name.lower() == SITE


def _syntax_error(text: str, err: Exception) -> QuerySyntaxError:
    if isinstance(err, sqlglot.ParseError) and err.errors:
        first = err.errors[0]
        line, col = first.get("line"), first.get("col")
        highlight = first.get("highlight") or ""
        # sqlglot reports the column of the last character of the offending token.
        if isinstance(col, int) and highlight:
            col = max(1, col - len(highlight) + 1)
        return QuerySyntaxError(f"syntax error: {first.get('description')}", line, col, text)
    msg = str(err)
    snippet = msg.split("'", 1)[1].rsplit("'", 1)[0] if "'" in msg else ""
    at = text.find(snippet) if snippet else -1
    if at >= 0:
        line, col = _line_col(text, at + max(0, len(snippet.rstrip()) - 1))
        return QuerySyntaxError("syntax error: cannot read the text here (an unclosed quote?)", line, col, text)
    return QuerySyntaxError(f"syntax error: {msg}", text=text)


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _Validator:
    """One validation pass; holds the text for error positions and the table aliases."""

    def __init__(self, text: str, schema: Schema, rules: DisclosureRules, sites: tuple[str, ...] | None) -> None:
        self.text = text
        self.schema = schema
        self.rules = rules
        self.sites = sites
        self.aliases: dict[str, str] = {}  # alias -> table name
        self.derived: dict[str, str] = {}  # alias.column -> derived expression over that alias

    # -- errors with positions -------------------------------------------------------------
    def _pos(self, node: exp.Expr) -> tuple[int | None, int | None]:
        for n in node.walk():
            start = n.meta.get("start") if n.meta else None
            if isinstance(start, int):
                return _line_col(self.text, start)
        return None, None

    def unsupported(self, node: exp.Expr | None, what: str) -> UnsupportedQuery:
        line, col = self._pos(node) if node is not None else (None, None)
        return UnsupportedQuery(what, line, col, self.text)

    def error(self, node: exp.Expr, what: str) -> QueryError:
        line, col = self._pos(node)
        return QueryError(what, line, col, self.text)

    # -- main ----------------------------------------------------------------------------
    def run(self) -> Query:
        try:
            statements = sqlglot.parse(self.text, read=DIALECT)
        except (sqlglot.ParseError, sqlglot.TokenError) as err:
            raise _syntax_error(self.text, err) from None
        statements = [s for s in statements if s is not None]
        if len(statements) != 1:
            raise QuerySyntaxError(f"expected exactly one SELECT statement, found {len(statements)}", text=self.text)
        tree = statements[0]
        if not isinstance(tree, exp.Select):
            raise self.unsupported(tree, f"only SELECT queries are supported, not {type(tree).__name__.upper()}")
        self._check_clauses(tree)
        source = self._resolve_tables(tree)
        select_aliases = {e.alias.lower(): e.this for e in tree.expressions if isinstance(e, exp.Alias) and e.alias}
        self._check_site(tree)
        for col in list(tree.find_all(exp.Column)):
            if is_site(col):
                continue  # the SITE pseudo-column: a group key, never in a site's SQL
            if not col.table and col.name.lower() in select_aliases and not self._is_column(col.name.lower()):
                continue  # a select alias used in GROUP BY; resolved there
            self._resolve_column(col)
        self._check_joins(tree)
        self._check_nodes(tree)
        self._check_comparisons(tree)
        keys, sets = self._group_keys(tree, select_aliases)
        aggs = self._aggregates(tree, keys)
        where = tree.args.get("where")
        self._check_identifiers(tree)
        n_cells = sum(_prod(len(keys[i].domain) for i in s) for s in sets)
        if n_cells > self.rules.max_groups:
            raise self.rules.refusal(
                "max_groups",
                f"the query has {n_cells} cells, more than {self.rules.max_groups}",
                "check_groups",
                n_cells,
            )
        first = (tree.args["from_"].this.alias or tree.args["from_"].this.name).lower()
        person = self.schema.tables[self.aliases[first]].person
        return Query(
            self.text,
            source,
            where.this if where is not None else None,
            keys,
            sets,
            aggs,
            self._post(keys, aggs),
            f"{first}.{person}" if person else None,
            tuple(sorted(self.derived.items())),
        )

    def _check_clauses(self, tree: exp.Select) -> None:
        """Only the clauses of the language; checks every function node and every FROM/JOIN source.

        Takes HAVING, ORDER BY, LIMIT and OFFSET off the tree (they are post-processing of the
        released values, see :mod:`.post`, and never reach a site), and records each select
        item's output name as written before columns are resolved (and lower-cased).
        """
        named = {
            "with_": "WITH (common table expressions)",
            "qualify": "QUALIFY",
            "windows": "WINDOW",
            "distinct": "SELECT DISTINCT",
            "laterals": "LATERAL",
            "pivots": "PIVOT",
            "sample": "USING SAMPLE / TABLESAMPLE",
            "into": "SELECT INTO",
        }
        for arg, node in tree.args.items():
            if node and arg not in _CLAUSES and arg not in _POST_CLAUSES:
                anchor = node[0] if isinstance(node, list) else node
                what = named.get(arg, arg.rstrip("_").upper())
                anchor = anchor if isinstance(anchor, exp.Expression) else tree
                raise self.unsupported(anchor, f"{what} is not supported in %%mpc queries")
        if tree.args.get("from_") is None:
            raise self.unsupported(tree, "a query needs FROM <table>")
        for node in tree.walk():
            if node is not tree and isinstance(node, exp.Select | exp.Subquery | exp.Union):
                raise self.unsupported(node, "subqueries are not supported")
            if isinstance(node, exp.Window):
                raise self.unsupported(node, f"window functions are not supported ({node.sql(DIALECT)})")
        for e in tree.expressions:
            if isinstance(e, exp.Star):
                raise self.unsupported(e, "SELECT * is not supported: name group keys and aggregates")
        self._check_sources(tree)
        self._check_functions(tree)
        self.post_clauses: dict[str, exp.Expression] = {}
        for arg in _POST_CLAUSES:
            if tree.args.get(arg) is not None:
                self.post_clauses[arg] = tree.args[arg].pop()
        self.written = _written_names(self.text, tree)
        self.originals = {id(e): e.copy() for e in tree.expressions}

    def _check_site(self, tree: exp.Select) -> None:
        """``SITE`` only as a group key (select item, GROUP BY item, inside ROLLUP/CUBE), with the
        committee's site names known; ``site`` is never an output name of anything else."""
        for e in tree.expressions:
            if isinstance(e, exp.Alias) and e.alias.lower() == SITE and not is_site(e.this):
                raise self.unsupported(e, f"{SITE!r} is reserved for the SITE pseudo-column; choose another name")
        for col in list(tree.find_all(exp.Column)):
            if not is_site(col):
                continue
            if not self.sites:
                raise self.unsupported(
                    col, "SITE (a per-site breakdown) needs the committee's site names, which this compile lacks"
                )
            node: exp.Expr = col
            if isinstance(node.parent, exp.Alias | exp.Rollup | exp.Cube):
                node = node.parent  # SITE AS name in the select list; SITE inside ROLLUP/CUBE
            parent = node.parent
            ok = (isinstance(parent, exp.Select) and node.arg_key == "expressions") or isinstance(parent, exp.Group)
            if not ok:
                raise self.unsupported(
                    col,
                    "SITE may only be a group key (in the select list and GROUP BY), not part of an expression, "
                    "a filter, a join or an aggregate",
                )
            ident = exp.to_identifier(SITE)
            ident.meta.update(col.this.meta)  # keep the source position for later errors
            col.set("this", ident)

    def _resolve_tables(self, tree: exp.Select) -> exp.Select:
        tables = [tree.args["from_"].this] + [j.this for j in tree.args.get("joins") or []]
        for t in tables:
            if not isinstance(t, exp.Table) or t.args.get("db") or t.args.get("catalog"):
                raise self.unsupported(t, f"FROM and JOIN take plain table names, not {t.sql(DIALECT)}")
            name = t.name.lower()
            if name not in self.schema.tables:
                line, col = self._pos(t)
                raise UnknownName(
                    f"unknown table {t.name!r}",
                    difflib.get_close_matches(name, list(self.schema.tables), n=3, cutoff=0.5),
                    line,
                    col,
                    self.text,
                )
            if self.rules.exposed is not None and name not in self.rules.exposed:
                raise self.rules.refusal(
                    "exposed",
                    f"table {name!r} is not exposed to analysts",
                    "check_table",
                    name,
                )
            alias = (t.alias or t.name).lower()
            if alias in self.aliases:
                raise self.error(t, f"table alias {alias!r} is used twice")
            self.aliases[alias] = name
        for j in tree.args.get("joins") or []:
            if j.args.get("using") or j.args.get("on") is None:
                raise self.unsupported(j, "joins need an explicit ON condition")
        source = exp.select("1").from_(tree.args["from_"].copy())
        for j in tree.args.get("joins") or []:
            source.append("joins", j.copy())
        return source

    def _is_column(self, name: str) -> bool:
        return any(name in self.schema.tables[t].columns for t in self.aliases.values())

    def _resolve_column(self, col: exp.Column) -> Column:
        name = col.name.lower()
        if col.table:
            alias = col.table.lower()
            if alias not in self.aliases:
                line, c = self._pos(col)
                raise UnknownName(
                    f"unknown table or alias {col.table!r}",
                    difflib.get_close_matches(alias, list(self.aliases), n=3, cutoff=0.5),
                    line,
                    c,
                    self.text,
                )
            owners = [alias] if name in self.schema.tables[self.aliases[alias]].columns else []
        else:
            owners = [a for a, t in self.aliases.items() if name in self.schema.tables[t].columns]
        if not owners:
            candidates = sorted(
                {
                    c
                    for a, t in self.aliases.items()
                    for c in self.schema.tables[t].columns
                    if not col.table or a == col.table.lower()
                }
            )
            line, c = self._pos(col)
            raise UnknownName(
                f"unknown column {col.sql(DIALECT)!r}",
                difflib.get_close_matches(name, candidates, n=3, cutoff=0.5),
                line,
                c,
                self.text,
            )
        if len(owners) > 1:
            raise self.error(col, f"column {name!r} is ambiguous: qualify it with one of {', '.join(owners)}")
        table = self.aliases[owners[0]]
        if self.rules.exposed is not None and name not in self.rules.exposed.get(table, frozenset()):
            raise self.rules.refusal(
                "exposed",
                f"column {table}.{name} is not exposed to analysts",
                "check_column",
                table,
                name,
            )
        ident = exp.to_identifier(name)
        ident.meta.update(col.this.meta)  # keep the source position for later errors
        col.set("table", exp.to_identifier(owners[0]))
        col.set("this", ident)
        column = self.schema.tables[table].columns[name]
        if column.expr is not None:
            self._derived(col, table, column.expr)
        return column

    def _derived(self, col: exp.Column, table: str, expr: str) -> None:
        """Record a derived column's expression over the column's alias; the columns it reads
        must be usable by the analyst too (exposed, not a site's identifier), else a derived
        column would read around a site's rules."""
        alias = col.table.lower()
        body = sqlglot.parse_one(expr, read=DIALECT)
        for used in body.find_all(exp.Column):
            name = used.name.lower()
            if self.rules.exposed is not None and name not in self.rules.exposed.get(table, frozenset()):
                raise self.rules.refusal(
                    "exposed", f"column {table}.{name} is not exposed to analysts", "check_column", table, name
                )
            if name in self.rules.identifiers or f"{table}.{name}" in self.rules.identifiers:
                raise self.rules.refusal(
                    "identifiers",
                    f"derived column {table}.{col.name} reads identifier column {table}.{name}",
                    "check_column",
                    table,
                    name,
                )
            used.set("table", exp.to_identifier(alias))
        self.derived[f"{alias}.{col.name.lower()}"] = body.sql(DIALECT)

    def _column_of(self, col: exp.Column) -> Column:
        return self.schema.tables[self.aliases[col.table.lower()]].columns[col.name.lower()]

    def _check_nodes(self, tree: exp.Select) -> None:
        """Every non-function node of WHERE, ON, the select list and GROUP BY is allow-listed
        (function nodes were checked by :meth:`_check_functions`)."""
        parts: list[exp.Expression] = [tree.args["where"]] if tree.args.get("where") else []
        parts += [j.args["on"] for j in tree.args.get("joins") or []]
        parts += list(tree.expressions)
        group = tree.args.get("group")
        if group is not None:
            parts += list(group.expressions)
        for part in parts:
            for node in part.walk():
                if isinstance(node, exp.Func | exp.WithinGroup | exp.Rollup | exp.Cube | exp.Where):
                    continue
                if isinstance(node, exp.Alias) and node.parent is tree:
                    continue
                if isinstance(node, exp.Star | exp.Distinct) and isinstance(node.parent, exp.Count):
                    continue
                if isinstance(node, exp.Order | exp.Ordered) and isinstance(node.parent, exp.WithinGroup | exp.Order):
                    continue
                misplaced = (isinstance(node, exp.Var) and not isinstance(node.parent, _VAR_PARENTS)) or (
                    isinstance(node, exp.DataType)
                    and not isinstance(node.parent, exp.Cast | exp.TryCast | exp.DataType)
                )
                if misplaced or not isinstance(node, _ALLOWED_NODES):
                    raise self.unsupported(
                        node, f"{node.key.upper()} ({node.sql(DIALECT)}) is not supported in %%mpc queries"
                    )

    def _check_sources(self, tree: exp.Select) -> None:
        """FROM and JOIN take plain tables: no table functions (``read_csv``, ``glob``, ...), no
        column renaming in the alias, no sampling, ASOF or POSITIONAL joins."""
        joins = tree.args.get("joins") or []
        for source in [tree.args["from_"].this] + [j.this for j in joins]:
            if not isinstance(source, exp.Table):
                continue  # refused by _resolve_tables, with its own message
            if isinstance(source.this, exp.Func):
                name = self._function_name(source.this)
                raise self.unsupported(
                    source, f"function {name}() is not allowed in %%mpc queries: FROM and JOIN take plain table names"
                )
            alias = source.args.get("alias")
            extra = [k for k, v in source.args.items() if v and k not in ("this", "db", "catalog", "alias")]
            if extra or (alias is not None and alias.columns):
                raise self.unsupported(source, f"FROM and JOIN take plain table names, not {source.sql(DIALECT)}")
        for j in joins:
            extra = [k for k, v in j.args.items() if v and k not in ("this", "on", "side", "kind", "using")]
            if extra:
                raise self.unsupported(j, f"{j.sql(DIALECT)}: only [LEFT|RIGHT|FULL|INNER] JOIN ... ON is supported")

    def _check_functions(self, tree: exp.Select) -> None:
        """Every function node anywhere in the query against the one allow-list.

        Scalar functions may stand anywhere; the aggregates only as a select item (nested ones
        are refused by :meth:`_aggregate` with a precise message) or, in HAVING and ORDER BY, as a
        reference to one; PROPORTION and RATE only as a whole select item. Anything else, known
        to sqlglot or not, is refused by name.
        """
        for node in tree.walk():
            if not isinstance(node, exp.Func):
                continue
            name = self._function_name(node)
            if type(node) in _SCALAR_FUNCTIONS:
                self._check_arguments(node, name)
                continue
            custom = isinstance(node, exp.Anonymous) and name.upper() in _CUSTOM_AGGREGATES
            if not custom and type(node) not in _AGGREGATE_FUNCTIONS:
                raise self._refused_function(node, name)
            self._check_arguments(node, name)
            top: exp.Expr = node.parent if isinstance(node.parent, exp.WithinGroup) else node
            top = top.parent if isinstance(top.parent, exp.Alias) else top
            if top.parent is tree and top.arg_key == "expressions":
                continue
            clause: exp.Expr = node
            while clause.parent is not tree and clause.parent is not None:
                clause = clause.parent
            if clause.arg_key in _POST_CLAUSES:
                continue  # HAVING COUNT(*) > 10: a reference to a select item, resolved by _post
            if clause.arg_key != "expressions":
                where = _CLAUSE_NAMES.get(clause.arg_key or "", "FROM")
                raise self.unsupported(node, f"aggregate {name}() is not allowed in {where}")
            if custom:
                raise self.unsupported(node, f"{name}() is an aggregate of its own: it must be a whole select item")

    def _refused_function(self, node: exp.Func, name: str) -> UnsupportedQuery:
        """The refusal of a function off the list, at its position; keywords such as
        CURRENT_USER carry none in sqlglot, so their first occurrence in the text stands in."""
        line, col = self._pos(node)
        found = re.search(rf"\b{re.escape(name)}\b", self.text, flags=re.IGNORECASE)
        if line is None and found is not None:
            line, col = _line_col(self.text, found.start())
        return UnsupportedQuery(f"function {name}() is not allowed in %%mpc queries", line, col, self.text)

    def _check_arguments(self, node: exp.Func, name: str) -> None:
        if isinstance(node, exp.Anonymous):
            return  # PROPORTION and RATE: their arguments are checked by _custom
        allowed = _FUNCTION_ARGS.get(type(node), frozenset({"this"}))
        extra = [k for k, v in node.args.items() if isinstance(v, exp.Expression | list) and v and k not in allowed]
        if extra:
            raise self.unsupported(node, f"function {name}() with these arguments is not allowed in %%mpc queries")

    def _function_name(self, node: exp.Func) -> str:
        """The function's name as written (sqlglot records the name token's position)."""
        start, end = node.meta.get("start"), node.meta.get("end")
        if isinstance(start, int) and isinstance(end, int):
            return self.text[start : end + 1]
        return str(node.this) if isinstance(node, exp.Anonymous) else node.sql_name().lower()

    def _name(self, item: exp.Expression) -> str:
        """The output name of a select item or group key as written: its alias, its column name
        (case kept; resolution lower-cases the column), else its text."""
        if isinstance(item, exp.Alias):
            return item.alias
        return self.written.get(id(item)) or (item.name if isinstance(item, exp.Column) else item.sql(DIALECT))

    def _post(self, keys: tuple[Key, ...], aggs: tuple[Aggregate, ...]) -> Post:
        """HAVING, ORDER BY, LIMIT and OFFSET over released outputs (see :mod:`.post`)."""
        clauses = self.post_clauses
        outputs = [k.name for k in keys]
        for agg in aggs:
            outputs.append(agg.name)
            if agg.kind in ("proportion", "rate"):
                outputs += [f"{agg.name}_ci_low", f"{agg.name}_ci_high"]
        having = clauses.get("having")
        order = clauses.get("order")
        items = [
            OrderItem(
                self._output(o.this, outputs, "ORDER BY"), bool(o.args.get("desc")), bool(o.args.get("nulls_first"))
            )
            for o in (order.expressions if order is not None else [])
        ]
        return Post(
            self._having(having.this, outputs) if having is not None else None,
            tuple(items),
            self._count(clauses["limit"], "LIMIT") if "limit" in clauses else None,
            self._count(clauses["offset"], "OFFSET") if "offset" in clauses else 0,
        )

    def _output(self, node: exp.Expression, outputs: list[str], clause: str) -> str:
        """The released output ``node`` refers to: an output name, a select-list position
        (ORDER BY 2) or an expression written as a select item is written (``COUNT(*)``)."""
        items = list(self.originals.items())
        if clause == "ORDER BY" and isinstance(node, exp.Literal) and not node.is_string:
            pos = _literal(node)
            if not isinstance(pos, int) or not 1 <= pos <= len(items):
                raise self.error(node, f"ORDER BY {node.sql(DIALECT)} does not name a select item")
            return self.item_names[items[pos - 1][0]]
        if isinstance(node, exp.Column) and not node.table:
            exact = [o for o in outputs if o == node.name]
            loose = [o for o in outputs if o.lower() == node.name.lower()]
            if exact or len(loose) == 1:
                return (exact or loose)[0]
        canonical = node.sql(DIALECT, normalize=True)
        for item_id, original in items:
            inner = original.this if isinstance(original, exp.Alias) else original
            if inner.sql(DIALECT, normalize=True) == canonical:
                return self.item_names[item_id]
        raise self.unsupported(
            node,
            f"{clause} may only use released columns; {node.sql(DIALECT)} is not one: add it to the select list",
        )

    def _having(self, cond: exp.Expression, outputs: list[str]) -> exp.Expression:
        """HAVING with every reference replaced by its output column; only HAVING_NODES remain."""

        def to_output(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Column) or (isinstance(node, exp.Func) and not isinstance(node, exp.And | exp.Or)):
                return output_column(self._output(node, outputs, "HAVING"))
            return node

        out = cond.copy().transform(to_output, copy=False)
        for node in out.walk():
            if not isinstance(node, HAVING_NODES):
                raise self.unsupported(
                    _find_same(cond, node), f"{node.sql(DIALECT)} is not supported in HAVING (compare released columns)"
                )
        return out

    def _count(self, node: exp.Expression, clause: str) -> int:
        value = _literal(node.args.get("expression"))
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.unsupported(node, f"{clause} takes a whole number literal")
        return value

    def _check_comparisons(self, tree: exp.Select) -> None:
        """Refuse comparisons of a column with a literal of the wrong kind, at compile time.

        Each site's engine would fail on them anyway, later, and its message could quote data
        (a text column compared with a number is cast value by value). Strings that read as
        numbers compare with numeric columns, and strings compare with dates, as in SQL.
        """
        comparisons = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between)
        for node in tree.find_all(*comparisons):
            operands = [node.this, node.args.get("expression"), node.args.get("low"), node.args.get("high")]
            operands += list(node.args.get("expressions") or [])
            columns = [o for o in operands if isinstance(o, exp.Column) and o.table and not is_site(o)]
            literals = [o for o in operands if isinstance(o, exp.Literal)]
            for col in columns:
                dtype = self._column_of(col).dtype
                for lit in literals:
                    if _literal_fits(dtype, lit):
                        continue
                    kind = "a string" if lit.is_string else "a number"
                    raise self.error(lit, f"cannot compare {dtype} column {col.name} with {kind} ({lit.sql(DIALECT)})")

    def _fail(self, node: exp.Expression, what: str) -> NoReturn:
        raise self.unsupported(node, what)

    def _check_joins(self, tree: exp.Select) -> None:
        """Joins follow person columns only (:func:`site_agent.privacy.persons.check_join`)."""
        persons = {a: self.schema.tables[t].person for a, t in self.aliases.items()}
        earlier = [(tree.args["from_"].this.alias or tree.args["from_"].this.name).lower()]
        for j in tree.args.get("joins") or []:
            alias = (j.this.alias or j.this.name).lower()
            check_join(j.args["on"], alias, earlier, persons, self._fail)
            earlier.append(alias)

    def _check_identifiers(self, tree: exp.Select) -> None:
        """Person columns and a site's identifier columns only in ON equalities and as the plain
        argument of COUNT(DISTINCT ...) (:func:`site_agent.privacy.persons.identifier_uses`).
        A site's identifier is refused in that site's name."""
        persons = {f"{a}.{p}" for a, t in self.aliases.items() if (p := self.schema.tables[t].person)}
        policy = {
            f"{a}.{c}"
            for a, t in self.aliases.items()
            for c in self.schema.tables[t].columns
            if c in self.rules.identifiers or f"{t}.{c}" in self.rules.identifiers
        }
        for col in identifier_uses(tree, persons | policy):
            qualified = f"{self.aliases[col.table.lower()]}.{col.name.lower()}"
            if f"{col.table.lower()}.{col.name.lower()}" in policy:
                raise self.rules.refusal(
                    "identifiers",
                    f"identifier column {qualified} may appear only in JOIN ... ON and COUNT(DISTINCT ...)",
                    "check_column",
                    *qualified.split(".", 1),
                )
            raise self.unsupported(
                col, f"person column {qualified} may appear only in JOIN ... ON and COUNT(DISTINCT {col.name})"
            )

    # -- group keys ----------------------------------------------------------------------
    def _group_keys(
        self, tree: exp.Select, select_aliases: dict[str, exp.Expression]
    ) -> tuple[tuple[Key, ...], tuple[tuple[int, ...], ...]]:
        group = tree.args.get("group")
        if group is None:
            return (), ((),)
        items = list(group.expressions)
        mode = "plain"
        if len(items) == 1 and isinstance(items[0], exp.Rollup | exp.Cube):
            mode = "rollup" if isinstance(items[0], exp.Rollup) else "cube"
            items = list(items[0].expressions)
        elif any(isinstance(i, exp.Rollup | exp.Cube) for i in items) or group.args.get("grouping_sets"):
            raise self.unsupported(group, "use GROUP BY ROLLUP(...) or CUBE(...) over all keys, or plain GROUP BY")
        keys: list[Key] = []
        for item in items:
            name, expr = self._key_expr(item, tree, select_aliases)
            keys.append(Key(name, expr, self._domain(expr, item), site=is_site(expr)))
        k = len(keys)
        if mode == "plain":
            sets: tuple[tuple[int, ...], ...] = (tuple(range(k)),)
        elif mode == "rollup":
            sets = tuple(tuple(range(i)) for i in range(k, -1, -1))
        else:
            sets = tuple(
                tuple(i for i in range(k) if mask & (1 << (k - 1 - i))) for mask in range((1 << k) - 1, -1, -1)
            )
        return tuple(keys), sets

    def _key_expr(
        self, item: exp.Expression, tree: exp.Select, select_aliases: dict[str, exp.Expression]
    ) -> tuple[str, exp.Expression]:
        if isinstance(item, exp.Literal) and not item.is_string:
            pos = int(item.this)
            if not 1 <= pos <= len(tree.expressions):
                raise self.error(item, f"GROUP BY {pos} does not name a select item")
            chosen = tree.expressions[pos - 1]
            return self._name(chosen), chosen.this if isinstance(chosen, exp.Alias) else chosen
        if isinstance(item, exp.Column) and not item.table and item.name.lower() in select_aliases:
            alias = next(
                e for e in tree.expressions if isinstance(e, exp.Alias) and e.alias.lower() == item.name.lower()
            )
            return alias.alias, select_aliases[item.name.lower()]
        for e in tree.expressions:
            inner = e.this if isinstance(e, exp.Alias) else e
            if inner == item:
                return self._name(e), item
        return self._name(item), item

    def _domain(self, expr: exp.Expression, anchor: exp.Expression) -> tuple[KeyValue, ...]:
        if expr.find(exp.AggFunc) is not None:
            raise self.unsupported(anchor, "aggregates cannot be group keys")
        if is_site(expr):
            assert self.sites  # checked by _check_site
            return tuple(self.sites)
        if isinstance(expr, exp.Paren):
            return self._domain(expr.this, anchor)
        if isinstance(expr, exp.Case):
            labels: list[KeyValue] = []
            for branch in [*expr.args.get("ifs", []), expr.args.get("default")]:
                value = branch.args["true"] if isinstance(branch, exp.If) else branch
                label = _literal(value)
                if label is _NOT_LITERAL:
                    raise self.unsupported(value, "CASE group keys need literal labels after THEN and ELSE")
                if label not in labels:
                    labels.append(label)  # type: ignore[arg-type]
            return tuple(labels)
        if isinstance(expr, exp.Column):
            column = self._column_of(expr)
            if column.domain is None:
                raise self.unsupported(
                    anchor,
                    f"GROUP BY {expr.name}: the column has no public domain in the schema; "
                    "declare one or bin it with CASE WHEN ... THEN 'label' ... END",
                )
            return column.domain
        if isinstance(expr, _PREDICATES):
            return (False, True)
        raise self.unsupported(
            anchor, f"GROUP BY {expr.sql(DIALECT)}: group keys must be columns with a domain, CASE bins or predicates"
        )

    # -- aggregates ----------------------------------------------------------------------
    def _aggregates(self, tree: exp.Select, keys: tuple[Key, ...]) -> tuple[Aggregate, ...]:
        out: list[Aggregate] = []
        self.item_names: dict[int, str] = {}  # id(select item) -> output name, for ORDER BY n
        names: set[str] = {k.name.lower() for k in keys}  # output names compare as SQL identifiers do
        key_exprs = [k.expr for k in keys]
        for item in tree.expressions:
            inner = item.this if isinstance(item, exp.Alias) else item
            if inner in key_exprs or (isinstance(inner, exp.Column) and any(inner == k for k in key_exprs)):
                self.item_names[id(item)] = next(k.name for k in keys if k.expr == inner)
                continue
            agg = self._aggregate(inner, self._name(item))
            self.item_names[id(item)] = agg.name
            if agg.name.lower() in names:
                raise self.error(item, f"output column name {agg.name!r} is used twice; add AS <name>")
            names.add(agg.name.lower())
            out.append(agg)
        if not out:
            raise self.unsupported(tree, "a query needs at least one aggregate (COUNT(*), AVG(x), ...)")
        return tuple(out)

    def _aggregate(self, node: exp.Expression, alias: str) -> Aggregate:
        """The aggregate with the query-set branches of its value (refusing engineered values)."""
        agg = self._aggregate_kind(node, alias)
        fail = self._fail
        if agg.kind == "count_star":
            return agg
        if agg.kind == "count_distinct":
            if not isinstance(agg.args[0], exp.Column):
                raise self.unsupported(agg.args[0], "COUNT(DISTINCT ...) takes a plain column")
            return replace(agg, branches=(Branch(None, agg.args[0], True),))
        if agg.kind == "rate":  # events and person-time, over the rows with a person-time
            for arg in agg.args:
                if isinstance(arg, _PREDICATES) or not plain_columns(arg, fail):
                    raise self.unsupported(arg, "RATE takes columns (or affine functions of one column)")
            return replace(agg, branches=(Branch(None, agg.args[1], True),))
        if agg.kind in ("quantile", "min", "max"):
            plain_columns(agg.args[0], fail)
            return replace(agg, branches=(Branch(None, agg.args[0], True),))
        return replace(agg, branches=tuple(branches(agg.args[0], fail)))

    def _aggregate_kind(self, node: exp.Expression, alias: str) -> Aggregate:
        name = alias or node.sql(DIALECT)
        if isinstance(node, exp.Anonymous):
            return self._custom(node, name)
        if isinstance(node, exp.WithinGroup):
            fn, order = node.this, node.expression
            if not isinstance(fn, exp.PercentileCont) or not isinstance(order, exp.Order):
                raise self.unsupported(node, f"{node.sql(DIALECT)} is not supported; use PERCENTILE_CONT(q)")
            (ordered,) = order.expressions
            if ordered.args.get("desc"):
                raise self.unsupported(ordered, "PERCENTILE_CONT ... ORDER BY x DESC is not supported; use 1 - q")
            return self._quantile(node, name, ordered.this, fn.this)
        if not isinstance(node, exp.AggFunc):
            if node.find(exp.AggFunc) is not None:
                raise self.unsupported(
                    node,
                    f"arithmetic on aggregates ({node.sql(DIALECT)}) is not supported; use AVG, PROPORTION or RATE",
                )
            raise self.error(node, f"{node.sql(DIALECT)} is neither a group key nor an aggregate")
        for inner in node.find_all(exp.AggFunc):
            if inner is not node:
                raise self.unsupported(inner, "nested aggregates are not supported")
        if isinstance(node, exp.Count):
            arg = node.this
            if isinstance(arg, exp.Star):
                return Aggregate(name, "count_star", ())
            if isinstance(arg, exp.Distinct):
                if len(arg.expressions) != 1:
                    raise self.unsupported(arg, "COUNT(DISTINCT ...) takes one expression")
                return Aggregate(name, "count_distinct", (arg.expressions[0],))
            return Aggregate(name, "count", (arg,))
        simple = {
            exp.Sum: ("sum", 1),
            exp.Avg: ("avg", 1),
            exp.Variance: ("var", 1),
            exp.VariancePop: ("var", 0),
            exp.Stddev: ("std", 1),
            exp.StddevSamp: ("std", 1),
            exp.StddevPop: ("std", 0),
        }
        for cls, (kind, ddof) in simple.items():
            if type(node) is cls:
                arg = node.this
                if isinstance(arg, _PREDICATES):
                    arg = _indicator(arg)
                return Aggregate(name, kind, (arg,), ddof=ddof)
        if isinstance(node, exp.Median):
            return self._quantile(node, name, node.this, exp.Literal.number(0.5))
        if isinstance(node, exp.PercentileCont):
            return self._quantile(node, name, node.this, node.expression)
        if isinstance(node, exp.Min | exp.Max):
            if not self.rules.allow_min_max:
                raise self.rules.refusal(
                    "allow_min_max",
                    f"{node.sql(DIALECT)}: MIN and MAX disclose one person's value",
                    "check_min_max",
                )
            return Aggregate(name, "min" if isinstance(node, exp.Min) else "max", (node.this,))
        raise self.unsupported(node, f"aggregate {node.sql(DIALECT)} is not supported")

    def _quantile(self, node: exp.Expression, name: str, col: exp.Expression, q: exp.Expression | None) -> Aggregate:
        qv = _literal(q) if q is not None else _NOT_LITERAL
        if not isinstance(qv, int | float) or isinstance(qv, bool) or not 0 <= qv <= 1:
            raise self.unsupported(node, "the quantile must be a number literal in [0, 1]")
        lo, hi = self.rules.quantile_range
        if not lo <= qv <= hi and not self.rules.allow_min_max:
            raise self.rules.refusal(
                "allow_min_max",
                f"quantile {qv} is outside {lo}-{hi}: quantiles near 0 and 1 are the minimum and maximum, "
                "one person's value",
                "check_min_max",
            )
        if not isinstance(col, exp.Column):
            raise self.unsupported(node, "MEDIAN and quantiles take a column with a declared grid, not an expression")
        column = self._column_of(col)
        if column.grid is None:
            raise self.unsupported(
                node, f"{col.name}: MEDIAN and quantiles need a public grid for the column in the schema"
            )
        return Aggregate(name, "quantile", (col,), q=float(qv), grid=column.grid)

    def _custom(self, node: exp.Anonymous, name: str) -> Aggregate:
        fn = str(node.this).upper()
        args = list(node.expressions)
        if fn == "PROPORTION":
            if len(args) != 1:
                raise self.unsupported(node, "PROPORTION takes one condition: PROPORTION(status = 2)")
            return Aggregate(name, "proportion", (_indicator(args[0]),))
        if fn == "RATE":
            if len(args) not in (2, 3):
                raise self.unsupported(node, "RATE takes (events, person_time[, per])")
            per = 1.0
            if len(args) == 3:
                value = _literal(args[2])
                if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                    raise self.unsupported(args[2], "RATE's third argument is a positive number literal")
                per = float(value)
            return Aggregate(name, "rate", (args[0], args[1]), per=per)
        raise self.unsupported(node, f"function {node.this}() is not supported")


_NOT_LITERAL = object()


def _literal(node: exp.Expression | None) -> object:
    """The Python value of a literal (string, number, boolean, NULL), else ``_NOT_LITERAL``."""
    if node is None or isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg):
        inner = _literal(node.this)
        return -inner if isinstance(inner, int | float) and not isinstance(inner, bool) else _NOT_LITERAL
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        text = str(node.this)
        return int(text) if text.lstrip("-").isdigit() else float(text)
    return _NOT_LITERAL


def _indicator(cond: exp.Expression) -> exp.Expression:
    """A predicate as 1/0 (NULL when the predicate is NULL)."""
    return exp.Case(
        ifs=[
            exp.If(this=cond.copy(), true=exp.Literal.number(1)),
            exp.If(this=exp.Not(this=exp.Paren(this=cond.copy())), true=exp.Literal.number(0)),
        ]
    )


def _prod(values: object) -> int:
    out = 1
    for v in values:  # type: ignore[attr-defined]
        out *= int(v)
    return out


def _literal_fits(dtype: str, lit: exp.Literal) -> bool:
    """Whether a literal compares with a column of ``dtype`` without a cast that can fail."""
    if dtype in ("integer", "float"):
        if not lit.is_string:
            return True
        try:
            float(lit.this)
        except ValueError:
            return False
        return True
    if dtype == "text":
        return bool(lit.is_string)
    return True  # dates and timestamps take date strings; booleans are compared with TRUE/FALSE


def _find_same(tree: exp.Expr, node: exp.Expr) -> exp.Expr:
    """The node of ``tree`` equal to ``node`` (for an error position), else ``tree``."""
    return next((n for n in tree.walk() if n == node), tree)


def _written_names(text: str, tree: exp.Select) -> dict[int, str]:
    """id(select item or group item) -> its output name as written, before resolution: a
    column's name with its case, else the item's source text (whitespace runs as one space).
    The ``SITE`` pseudo-column keeps its name, ``site``, however it is written."""
    out: dict[int, str] = {}
    group = tree.args.get("group")
    items = list(tree.expressions) + (list(group.expressions) if group is not None else [])
    for item in items:
        if isinstance(item, exp.Column) and not is_site(item):  # SITE's own column is named site
            out[id(item)] = item.name
    texts = _select_texts(text)
    if texts is not None and len(texts) == len(tree.expressions):
        for item, written in zip(tree.expressions, texts, strict=True):
            if not isinstance(item, exp.Alias | exp.Column):
                out[id(item)] = written
    return out


def _select_texts(text: str) -> list[str] | None:
    """The source text of each select item: the select list split at top-level commas."""
    try:
        tokens = sqlglot.Dialect.get_or_raise(DIALECT).tokenize(text)
    except sqlglot.TokenError:
        return None
    kinds = sqlglot.TokenType
    start = next((i for i, t in enumerate(tokens) if t.token_type == kinds.SELECT), None)
    if start is None:
        return None
    out: list[str] = []
    depth, first = 0, start + 1
    for i in range(start + 1, len(tokens) + 1):
        tok = tokens[i] if i < len(tokens) else None
        if tok is not None and tok.token_type in (kinds.L_PAREN, kinds.L_BRACKET):
            depth += 1
        elif tok is not None and tok.token_type in (kinds.R_PAREN, kinds.R_BRACKET):
            depth -= 1
        elif tok is None or (depth == 0 and tok.token_type in (kinds.COMMA, kinds.FROM)):
            if first < i:
                out.append(" ".join(text[tokens[first].start : tokens[i - 1].end + 1].split()))
            if tok is None or tok.token_type == kinds.FROM:
                return out
            first = i + 1
    return out
