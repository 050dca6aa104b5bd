"""The strict function allow-list: every function DuckDB knows is either on the documented list
(and compiles) or refused by name before any site sees the query.

The attacks of issue 9, family 7, are replayed against real DuckDB first (the oracle or the read
is real), then shown to stop at compile time with an answer that is the same whatever the data.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

from site_agent.errors import PolicyRefusal, QueryError, UnsupportedQuery
from site_agent.query import DisclosureRules, compile_query

from .conftest import Consortium

# docs/query-language.md, "Filters, joins, dates" and "Aggregates", in DuckDB's spellings; the
# second spellings (ceiling, lcase, len, substr, today, datediff, ...) are read as the same
# functions and reach a site under the first.
DOCUMENTED_SCALAR = {
    "abs", "ceil", "ceiling", "floor", "round", "greatest", "least", "lower", "lcase", "upper", "ucase",
    "length", "len", "char_length", "character_length", "substring", "substr", "coalesce", "if", "mod",
    "date_diff", "datediff", "date_trunc", "datetrunc", "date_add", "year", "month", "day",
    "current_date", "today",
}  # fmt: skip
DOCUMENTED_AGGREGATE = {
    "count", "sum", "avg", "variance", "var_samp", "var_pop", "stddev", "stddev_samp", "stddev_pop",
    "median", "quantile_cont", "percentile_cont", "min", "max",
}  # fmt: skip
# What a plan's local SQL may call: the documented functions under their first spelling, and the
# keywords that stand before a parenthesis in SQL.
LOCAL_SQL_CALLS = {
    "abs", "ceil", "floor", "round", "greatest", "least", "lower", "upper", "length", "substring",
    "coalesce", "date_diff", "date_trunc", "year", "month", "day", "extract", "count", "sum", "avg",
    "var_pop", "max", "min", "cast", "try_cast", "not", "when", "then", "else", "and", "or", "in", "if", "interval",
    "try",  # the compiler's own: analyst expressions are made total (site_agent/query/failsafe.py)
}  # fmt: skip

SHAPES = (
    "SELECT COUNT(*) FROM lung WHERE {f}() IS NOT NULL",
    "SELECT COUNT(*) FROM lung WHERE {f}(age) IS NOT NULL",
    "SELECT COUNT(*) FROM lung WHERE {f}(age, 1) IS NOT NULL",
    "SELECT COUNT(*) FROM lung WHERE {f}('day', age, 1) IS NOT NULL",
    "SELECT {f}(age) AS v FROM lung",
    "SELECT {f}(age, 0.5) AS v FROM lung",
    "SELECT COUNT(*) FROM {f}('lung.csv')",
    "SELECT COUNT(*) FROM lung a JOIN {f}('lung.csv') b ON a.age = b.age",
)
TARGET = "age = 74 AND sex = 1 AND inst = 12"  # one patient of the lung data, at one site


def _spelled(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def _at(text: str, err: QueryError) -> str:
    """The text from the error's line and column on."""
    assert err.line is not None and err.column is not None
    return text.splitlines()[err.line - 1][err.column - 1 :]


def test_every_duckdb_function_is_allowed_or_refused(lung: Consortium) -> None:
    names = sorted(
        {r[0] for r in duckdb.connect().execute("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()}
    )
    assert len(names) > 500 and {"hash", "error", "current_setting", "read_csv", "glob"} <= set(names)
    rules = DisclosureRules(min_cell_size=5, allow_min_max=True)
    compiled: dict[str, list[str]] = defaultdict(list)
    refused: dict[str, list[QueryError]] = defaultdict(list)
    leaks = []
    for name in names:
        for shape in SHAPES:
            text = shape.format(f=_spelled(name))
            try:
                plan = compile_query(text, lung.schema, rules)
            except QueryError as err:
                refused[name].append(err)
                continue
            compiled[name].append(text)
            calls = {c.lower() for q in plan.data["local"] for c in re.findall(r"(\w+)\s*\(", q["sql"])}
            if not calls <= LOCAL_SQL_CALLS:
                leaks.append((text, calls - LOCAL_SQL_CALLS))
    assert not leaks, f"functions outside the list reach a site's SQL: {leaks}"
    assert not set(compiled) - DOCUMENTED_SCALAR - DOCUMENTED_AGGREGATE, "compiled but not documented"
    # Every name that is not on the list is refused as unsupported in at least one shape (the
    # other shapes may fail earlier, on arity, as syntax errors).
    not_named = [n for n in set(names) - set(compiled) if not any(isinstance(e, UnsupportedQuery) for e in refused[n])]
    assert not not_named, not_named
    # The list works: the documented functions DuckDB has compile in some shape.
    missing = (DOCUMENTED_SCALAR | DOCUMENTED_AGGREGATE) & set(names) - set(compiled) - {"percentile_cont"}
    assert not missing, missing


def _refused(c: Consortium, text: str) -> UnsupportedQuery:
    with pytest.raises(UnsupportedQuery) as info:
        compile_query(text, c.schema, c.rules)
    return info.value


def test_error_oracle_stops_at_compile_time(lung: Consortium) -> None:
    text = f"SELECT COUNT(*) FROM lung WHERE CASE WHEN {TARGET} THEN error('found') ELSE TRUE END"
    absent_text = text.replace("age = 74", "age = 19")  # nobody is 19 in the lung data

    def failing_sites(query: str) -> list[str]:
        """Where the WHERE clause fails when run as is by a site's engine."""
        where = query.split("WHERE ", 1)[1]
        failed = []
        for site, con in lung.cons.items():
            try:
                con.execute(f"SELECT COUNT(*) FROM lung WHERE {where}").fetchall()
            except duckdb.Error:
                failed.append(site)
        return failed

    # Against a site's engine the oracle is real: it fails only where the patient is.
    assert len(failing_sites(text)) == 1 and failing_sites(absent_text) == []
    # The attacker's inference: the answers with the patient present and absent are equal.
    present, absent = _refused(lung, text), _refused(lung, absent_text)
    assert str(present).splitlines()[0] == str(absent).splitlines()[0]
    assert "function error() is not allowed in %%mpc queries" in str(present)
    assert _at(text, present).startswith("error(")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("SELECT COUNT(*) FROM lung WHERE hash(meal_cal) % 2 = 0", "hash"),
        ("SELECT COUNT(*) FROM lung WHERE current_setting('secret_directory') LIKE '/%'", "current_setting"),
        ("SELECT AVG(hash(time)) AS h FROM lung", "hash"),
        ("SELECT SUM(CASE WHEN hash(time) > 0 THEN 1 ELSE 0 END) AS h FROM lung", "hash"),
        ("SELECT COUNT(DISTINCT md5(CAST(time AS VARCHAR))) AS h FROM lung", "md5"),
        ("SELECT PROPORTION(error('x') IS NULL) AS p FROM lung", "error"),
        ("SELECT COUNT(*) FROM lung a JOIN lung b ON hash(a.time) = hash(b.time)", "hash"),
        ("SELECT hash(age) % 2 = 0 AS g, COUNT(*) FROM lung GROUP BY g", "hash"),
        ("SELECT COUNT(*) FROM lung GROUP BY CASE WHEN Hash(age) > 0 THEN 'a' ELSE 'b' END", "Hash"),
        ("SELECT COUNT(*) FROM lung WHERE regexp_matches(CAST(time AS VARCHAR), '^1')", "regexp_matches"),
        ("SELECT COUNT(*) FROM lung WHERE list_contains([74], age)", "list_contains"),
        ("SELECT COUNT(*) FROM lung WHERE getenv('HOME') = '/root'", "getenv"),
        ("SELECT MODE(age) AS m FROM lung", "MODE"),
        ("SELECT COUNT(*) FROM lung WHERE current_user = 'x'", "current_user"),
        ("SELECT COUNT(*) FROM lung WHERE random() > 0.5", "random"),
    ],
)
def test_function_outside_the_list_is_refused_by_name_and_position(lung: Consortium, text: str, name: str) -> None:
    err = _refused(lung, text)
    assert f"function {name}() is not allowed in %%mpc queries" in str(err)
    assert _at(text, err).startswith(name)


def test_current_setting_would_read_the_site_configuration(lung: Consortium) -> None:
    con = next(iter(lung.cons.values()))
    (value,) = con.execute("SELECT current_setting('secret_directory')").fetchone()
    assert isinstance(value, str) and value  # a site's path, had the function been let through
    text = f"SELECT COUNT(*) FROM lung WHERE current_setting('secret_directory') = '{value}'"
    assert "current_setting() is not allowed" in str(_refused(lung, text))


@pytest.mark.parametrize("fn", ["read_csv", "read_csv_auto", "read_parquet", "read_json", "glob", "read_text"])
def test_table_functions_never_read_a_site_file(lung: Consortium, tmp_path: Path, fn: str) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("age,code\n74,4711\n")
    con = next(iter(lung.cons.values()))
    if fn in ("read_csv", "read_csv_auto"):
        assert con.execute(f"SELECT SUM(code) FROM {fn}('{secret}')").fetchone() == (4711,)  # it would read
    for text in (
        f"SELECT COUNT(*) FROM {fn}('{secret}')",
        f"SELECT COUNT(*) FROM lung a JOIN {fn}('{secret}') s ON a.age = s.age",
        f"SELECT COUNT(*) FROM lung a, {fn}('{secret}') s",
    ):
        err = _refused(lung, text)
        assert f"function {fn}() is not allowed in %%mpc queries" in str(err)
        assert _at(text, err).startswith(fn)


def test_a_file_named_as_a_table_is_an_unknown_table(lung: Consortium, tmp_path: Path) -> None:
    with pytest.raises(QueryError) as info:
        compile_query(f"SELECT COUNT(*) FROM '{tmp_path / 'x.csv'}'", lung.schema, lung.rules)
    assert "unknown table" in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("SELECT COUNT(*) FROM lung WHERE COUNT(*) > 3", "aggregate COUNT() is not allowed in WHERE"),
        ("SELECT COUNT(*) FROM lung a JOIN lung b ON SUM(a.age) > 0", "aggregate SUM() is not allowed in JOIN"),
        ("SELECT COUNT(*) FROM lung GROUP BY AVG(age) > 3", "aggregate AVG() is not allowed in GROUP BY"),
        ("SELECT SUM(PROPORTION(age > 60)) FROM lung", "PROPORTION() is an aggregate of its own"),
        ("SELECT COUNT(*) FROM lung WHERE RATE(status, time) > 0", "aggregate RATE() is not allowed in WHERE"),
        ("SELECT COUNT(*) FROM lung AS l(sex, age)", "plain table names"),
        ("SELECT COUNT(*) FROM lung USING SAMPLE 10", "SAMPLE"),
        ("SELECT COUNT(*) FROM lung a ASOF JOIN lung b ON a.age >= b.age", "only [LEFT|RIGHT|FULL|INNER] JOIN"),
        ("SELECT COUNT(*) FROM lung a POSITIONAL JOIN lung b", "only [LEFT|RIGHT|FULL|INNER] JOIN"),
    ],
)
def test_misplaced_aggregates_and_other_sources_are_refused(lung: Consortium, text: str, fragment: str) -> None:
    assert fragment in str(_refused(lung, text))


def test_min_max_stay_a_policy_decision(lung: Consortium) -> None:
    with pytest.raises(PolicyRefusal):
        compile_query("SELECT MAX(age) AS oldest FROM lung", lung.schema, lung.rules)
    rules = DisclosureRules(min_cell_size=5, allow_min_max=True)
    assert compile_query("SELECT MAX(age) AS oldest FROM lung", lung.schema, rules).data["outputs"]
