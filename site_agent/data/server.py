"""Push-down to a database server: the plan's local SQL, transpiled, runs where the data are.

The planner writes DuckDB SQL. :func:`to_dialect` rewrites it for the server: each consortium
table becomes a subquery that presents the local table under the consortium's names and codes
(``mapping``), DuckDB-only constructs get an equivalent with the same numbers, and sqlglot
generates the server's dialect. Only the pre-aggregates (a few rows per cell) come back; the
table is never copied out.

Same numbers, not just valid SQL:

* ``ROUND`` of a double in PostgreSQL breaks ties to even; DuckDB rounds them away from zero
  (a histogram bin on a grid point must not move). ``ROUND(x)`` becomes ``TRUNC(x) + TRUNC(2 *
  (x - TRUNC(x)))`` in double precision, which rounds ties away from zero exactly; ``ROUND(x, d)``
  casts to NUMERIC, whose ``ROUND`` does the same (slower, and the planner does not write it).
* ``TRY_CAST`` does not exist in PostgreSQL (sqlglot writes a plain ``CAST``, which fails on the
  first bad value). It becomes ``CASE WHEN <value as text> ~ <pattern of the target type>
  THEN CAST(...) END``: NULL where DuckDB gives NULL, for number, boolean, date and timestamp
  targets; a text target needs no guard. Values that match the pattern but still cannot be
  converted (an integer beyond 64 bits, 2023-02-30) fail the local step, which the site reports
  as an engine error; any other target type is refused with a message naming it.
* A whole decimal literal (``120.0``, the planner's grid bounds) is written as an integer: the
  same value, but PostgreSQL would otherwise compute on an integer column in NUMERIC.
* Integer division, ``date_diff``, ``date_trunc``, ``EXTRACT``, intervals: sqlglot's PostgreSQL
  generator already writes equivalents (checked against DuckDB in ``tests/data``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import sqlglot
from sqlglot import exp

from ..config import TableSource, redact_url
from ..errors import QueryError
from .connector import Columns
from .mapping import presenting_select

DIALECTS = {"postgresql": "postgres"}
"""``TableSource.format`` of a server -> its sqlglot dialect."""

_NUMBER = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_BOOLEAN = r"^\s*(true|false|t|f|yes|no|y|n|on|off|1|0)\s*$"  # matched in lower case
_DATE = r"^\s*[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}\s*$"
_TIMESTAMP = r"^\s*[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([ T][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?\s*$"
_T = exp.DataType.Type
_TRY_CAST_PATTERNS = {
    **dict.fromkeys((_T.TINYINT, _T.SMALLINT, _T.INT, _T.BIGINT, _T.FLOAT, _T.DOUBLE, _T.DECIMAL), _NUMBER),
    _T.BOOLEAN: _BOOLEAN,
    _T.DATE: _DATE,
    **dict.fromkeys((_T.TIMESTAMP, _T.DATETIME), _TIMESTAMP),
}


def _postgres_fixes(node: exp.Expr) -> exp.Expr:
    """DuckDB semantics in PostgreSQL for the constructs the generator does not map (see above)."""
    if isinstance(node, exp.Literal) and node.is_number and "." in node.this:
        number = float(node.this)
        if number.is_integer() and abs(number) < 2**53:
            # 120.0 is NUMERIC in PostgreSQL and drags an integer column into NUMERIC arithmetic
            # (several times slower); as 120 the values are the same and the arithmetic integer.
            return exp.Literal.number(int(number))
    if isinstance(node, exp.Round):
        if node.args.get("decimals") is not None:
            node.set("this", exp.Cast(this=node.this, to=exp.DataType.build("decimal")))
            return node
        # TRUNC(x) + TRUNC(2 * (x - TRUNC(x))): ties away from zero, exact in double precision
        # (x - TRUNC(x) and the doubling lose no bits), several times faster than NUMERIC.
        x = exp.Cast(this=node.this, to=exp.DataType.build("double"))
        whole = exp.func("TRUNC", x.copy())
        fraction = exp.Sub(this=x.copy(), expression=whole.copy())
        return exp.Add(
            this=whole,
            expression=exp.func("TRUNC", exp.Mul(this=exp.Literal.number(2), expression=exp.Paren(this=fraction))),
        )
    if isinstance(node, exp.TryCast):
        to = node.args["to"]
        text = exp.Cast(this=node.this.copy(), to=exp.DataType.build("text"))
        if to.is_type(*exp.DataType.TEXT_TYPES):
            return text
        pattern = _TRY_CAST_PATTERNS.get(to.this)
        if pattern is None:
            raise QueryError(f"TRY_CAST to {to.sql('postgres')} is not supported at a PostgreSQL site")
        matches = exp.RegexpLike(this=exp.Lower(this=text.copy()), expression=exp.Literal.string(pattern))
        value = node.this
        if to.is_type(*exp.DataType.INTEGER_TYPES):
            # DuckDB reads '3.5' and '1e3' as integers (4, 1000): through NUMERIC, which rounds
            # ties away from zero as DuckDB does for text (a double exactly at .5 rounds to even
            # in DuckDB, away from zero here: the one case where the two differ).
            value = exp.Cast(this=text.copy(), to=exp.DataType.build("decimal"))
        return exp.Case().when(matches, exp.Cast(this=value, to=to.copy()))
    return node


_FIXES: dict[str, Callable[[exp.Expr], exp.Expr]] = {"postgres": _postgres_fixes}


def to_dialect(sql: str, views: Mapping[str, exp.Select], dialect: str) -> str:
    """The planner's DuckDB ``sql`` for a ``dialect`` server, each table in ``views`` (consortium
    name -> presenting SELECT) replaced by its subquery under the same name or alias."""
    tree: exp.Expr = sqlglot.parse_one(sql, read="duckdb")
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        name = table.name.lower()
        if name in ctes and not table.db:
            continue
        if table.db or name not in views:
            raise QueryError(f"table {table.sql('duckdb')} is not served by this {dialect} source")
        alias = exp.TableAlias(this=exp.to_identifier(table.alias or table.name))
        table.replace(exp.Subquery(this=views[name].copy(), alias=alias))
    fix = _FIXES.get(dialect)
    if fix is not None:
        for node in reversed(list(tree.walk(bfs=True))):  # children before their parents
            fixed = fix(node)
            if fixed is not node:
                tree = fixed if node is tree else tree
                node.replace(fixed)
    return tree.sql(dialect=dialect)


class SqlConnector:
    """Tables in one database server, reached through a DB-API 2 connection.

    ``connect`` opens a connection (it is called again after the server dropped one); each
    ``execute`` transpiles to ``dialect`` and runs under a lock, so ``cursor`` can hand out the
    connector itself to every thread.
    """

    def __init__(self, tables: Mapping[str, TableSource], connect: Callable[[], Any], dialect: str) -> None:
        self.dialect = dialect
        self._connect = connect
        self._lock = threading.Lock()
        self._conn: Any = connect()
        self.views: dict[str, exp.Select] = {}
        for name, source in tables.items():
            table = exp.to_table(source.local_table, dialect=dialect)
            cur = self._conn.cursor()
            try:
                cur.execute(f"SELECT * FROM {table.sql(dialect)} WHERE 1 = 0")
                local = [d[0] for d in cur.description]
            except Exception as exc:
                self.close()
                raise source.error(
                    "table", f"{source.describe()}: {exc}", "check the table's name and that the role may SELECT it"
                ) from None
            finally:
                cur.close()
            self.views[name] = presenting_select(source, table, local)
        self._types = {name: self._describe(name) for name in self.views}

    def _describe(self, name: str) -> dict[str, str]:
        cur = self._conn.cursor()
        try:
            cur.execute(f"SELECT * FROM ({self.views[name].sql(self.dialect)}) AS t WHERE 1 = 0")
            return {d[0]: _type_name(self._conn, d[1]) for d in cur.description}
        finally:
            cur.close()

    def translate(self, sql: str) -> str:
        """The SQL this server runs for the planner's ``sql``."""
        return to_dialect(sql, self.views, self.dialect)

    def execute(self, sql: str) -> Columns:
        text = self.translate(sql)
        with self._lock:
            if getattr(self._conn, "closed", False) or getattr(self._conn, "broken", False):
                self._conn = self._connect()
            cur = self._conn.cursor()
            try:
                cur.execute(text)
                names = [d[0] for d in cur.description]
                return Columns(names, cur.fetchall())
            finally:
                cur.close()

    def cursor(self) -> SqlConnector:
        return self

    def columns(self) -> dict[str, dict[str, str]]:
        return {name: dict(types) for name, types in self._types.items()}

    def close(self) -> None:
        self._conn.close()


def _type_name(conn: Any, type_code: Any) -> str:
    """The server's name of a result column's type (psycopg gives OIDs)."""
    adapters = getattr(conn, "adapters", None)
    info = adapters.types.get(type_code) if adapters is not None else None
    return str(info.name) if info is not None else str(type_code)


def _connect_postgres(source: TableSource) -> Any:
    """A psycopg connection in autocommit mode whose transactions are read-only (on top of the
    role's grants), with NUMERIC results as floats (what the query path reads)."""
    try:
        import psycopg
        from psycopg.types.numeric import FloatLoader
    except ImportError:
        raise source.error("source", "psycopg is not installed", 'pip install "mpc-jupyter[postgres]"') from None
    try:
        conn = psycopg.connect(source.source or "", autocommit=True, application_name="mpc-site-agent")
    except psycopg.Error as exc:
        problem = f"cannot connect to {redact_url(source.source or '')}: {exc}"
        raise source.error("source", problem, "check the URL, that the server runs, and ~/.pgpass") from None
    conn.adapters.register_loader("numeric", FloatLoader)
    conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    return conn


def open_server(tables: Mapping[str, TableSource]) -> SqlConnector:
    """A connector for ``tables``, which all live in the database of one ``source`` URL."""
    first = next(iter(tables.values()))
    if first.source is None or first.format not in DIALECTS:
        raise first.error("source", "is not a database server", "give a postgresql:// URL")
    return SqlConnector(tables, lambda: _connect_postgres(first), DIALECTS[first.format])
