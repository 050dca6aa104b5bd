"""Hostile query text: the %%mpc parser refuses with a QueryError or PolicyRefusal, never anything else.

Text comes from a small SQL grammar over the test schema (aggregates, CASE, arithmetic,
functions, joins, subqueries, window functions, literals of every kind), from that text with
characters damaged, and from arbitrary strings. ``parse_query`` must either accept it or
raise one of the library's own refusals: an analyst never sees a Python traceback.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from site_agent.errors import PolicyRefusal, QueryError
from site_agent.query import DisclosureRules
from site_agent.query.parse import parse_query
from site_agent.query.schema_file import load_schema_file

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMA_TOML = """[tables.patients]
pid = "text"
sex = { type = "text", domain = ["F", "M"] }
ward = { type = "text", domain = ["cardio", "icu"] }
age = { type = "integer", grid = [0, 120, 1] }
sbp = "float"

[tables.labs]
pid = "text"
hba1c = { type = "float", grid = [2, 15, 0.01] }
"""
RULES = DisclosureRules(min_cell_size=5, allow_min_max=True, identifiers=frozenset({"pid"}))
SITES = ("hospital-a", "hospital-b", "hospital-c")

columns = st.sampled_from(["sex", "ward", "age", "sbp", "pid", "hba1c", "p.age", "l.hba1c", "site", "nosuch", "*"])
literals = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6).map(lambda t: "'" + t.replace("'", "''") + "'"),
    st.sampled_from(["NULL", "TRUE", "FALSE", "DATE '2020-01-01'", "INTERVAL 1 DAY", "1e400", "0x1F", "-0.0"]),
)
functions = st.sampled_from(
    [
        "ABS",
        "LEAST",
        "GREATEST",
        "COALESCE",
        "ROUND",
        "LN",
        "EXP",
        "SQRT",
        "NULLIF",
        "CAST",
        "UPPER",
        "FOO",
        "ANY_VALUE",
    ]
)
aggregates = st.sampled_from(
    ["COUNT", "SUM", "AVG", "STDDEV", "VARIANCE", "MEDIAN", "MIN", "MAX", "COUNT(DISTINCT", "QUANTILE_CONT", "CORR"]
)
operators = st.sampled_from(["+", "-", "*", "/", "%", "=", "<>", "<", ">=", "AND", "OR", "||", "IS", "LIKE", "IN"])


def expressions(depth: int = 2) -> st.SearchStrategy[str]:
    base = st.one_of(columns, literals)
    if depth == 0:
        return base
    inner = expressions(depth - 1)
    return st.one_of(
        base,
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, operators, inner),
        st.builds(lambda f, a, b: f"{f}({a}, {b})", functions, inner, inner),
        st.builds(lambda a: f"CAST({a} AS DOUBLE)", inner),
        st.builds(lambda c, a, b: f"CASE WHEN {c} THEN {a} ELSE {b} END", inner, inner, inner),
        st.builds(lambda a: f"({a})", inner),
        st.builds(lambda a: f"(SELECT {a} FROM patients)", inner),
    )


def aggregate_call(arg: str, agg: str, q: float) -> str:
    if agg == "COUNT(DISTINCT":
        return f"COUNT(DISTINCT {arg})"
    if agg == "QUANTILE_CONT":
        return f"QUANTILE_CONT({arg}, {q})"
    return f"{agg}({arg})"


select_items = st.one_of(
    st.builds(aggregate_call, expressions(), aggregates, st.floats(-1, 2)),
    expressions(1),
    st.just("COUNT(*)"),
    st.just("SUM(sbp) OVER (PARTITION BY sex)"),
)
sources = st.sampled_from(
    [
        "patients",
        "labs",
        "patients p JOIN labs l ON p.pid = l.pid",
        "patients p JOIN labs l ON p.pid = 'x'",
        "patients, labs",
        "(SELECT * FROM patients) t",
        "nosuch",
    ]
)
queries = st.builds(
    lambda items, src, where, group, tail: (
        f"SELECT {', '.join(f'{e} AS c{i}' for i, e in enumerate(items))} FROM {src}"
        + (f" WHERE {where}" if where else "")
        + (f" GROUP BY {', '.join(group)}" if group else "")
        + tail
    ),
    st.lists(select_items, min_size=1, max_size=3),
    sources,
    st.none() | expressions(),
    st.lists(st.sampled_from(["sex", "ward", "site", "age", "1", "sbp + 1"]), max_size=2),
    st.sampled_from(
        ["", " HAVING COUNT(*) > 5", " LIMIT 1", " ORDER BY 1", ";", "; DROP TABLE patients", " UNION SELECT 1"]
    ),
)


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path: Path = tmp_path_factory.mktemp("fuzz") / "schema.toml"
    path.write_text(SCHEMA_TOML)
    return load_schema_file(path)


def refuses_properly(text: str, schema) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(QueryError, PolicyRefusal):
        parse_query(text, schema, RULES, SITES)


@FUZZ
@given(queries)
def test_generated_queries(schema, text: str) -> None:  # type: ignore[no-untyped-def]
    refuses_properly(text, schema)


@FUZZ
@given(queries, st.data())
def test_damaged_queries(schema, text: str, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    chars = list(text)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(chars)))
        chars[at:at] = data.draw(st.sampled_from(["(", ")", "'", '"', ",", "`", "--", "/*", "\\", "\x00", "é", " "]))
    refuses_properly("".join(chars), schema)


@FUZZ
@given(st.text(max_size=120))
def test_arbitrary_text(schema, text: str) -> None:  # type: ignore[no-untyped-def]
    refuses_properly(text, schema)


def test_a_valid_query_is_accepted(schema) -> None:  # type: ignore[no-untyped-def]
    # The fuzz checks can fail only if some text gets past the parser: a plain query does.
    query = parse_query("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", schema, RULES, SITES)
    assert query is not None
