"""What one row may add to a released number (site_agent/privacy/contributions.py), in one process.

`plain_columns` decides which arguments are a contribution (a column or an affine function of
one column) and refuses the rest with the reason; `branches` splits a predicate, CASE or IF into
the query sets the release rule checks. The branches are checked against DuckDB itself: on a
table with NULLs, every row reaches exactly the branch whose value CASE gives it (or none, where
CASE gives NULL), so the sets the rule checks are the rows that make the released number."""

from __future__ import annotations

from typing import NoReturn

import duckdb
import pytest
import sqlglot
import sqlglot.expressions as exp

from site_agent.privacy.contributions import branches, plain_columns


class Refused(Exception):
    def __init__(self, node: exp.Expression, message: str) -> None:
        super().__init__(message)
        self.node = node


def _fail(node: exp.Expression, message: str) -> NoReturn:
    raise Refused(node, message)


def _expr(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="duckdb")


@pytest.mark.parametrize(
    ("sql", "columns"),
    [
        ("x", {"x"}),
        ("3.5", set()),
        ("-(x)", {"x"}),
        ("2 * x + 1", {"x"}),
        ("x * 2 - 7", {"x"}),
        ("(x + 1) / 4", {"x"}),
        ("CAST(x AS DOUBLE) * 100", {"x"}),
        ("TRY_CAST(x AS BIGINT)", {"x"}),
        ("x / 2 + 3 * 4", {"x"}),
    ],
)
def test_contributions_name_their_one_column(sql: str, columns: set[str]) -> None:
    assert plain_columns(_expr(sql), _fail) == columns


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("x + y", "x + y combines several columns"),
        ("x - y", "x - y combines several columns"),
        ("x * y", "x * y multiplies columns"),
        ("1 / x", "1 / x divides by a column"),
        ("x / y", "x / y divides by a column"),
        ("x * (x > 5)", "a predicate inside arithmetic (x > 5)"),
        (
            "CAST(x > 5 AS INT)",
            "a predicate cast to a number is not a contribution; use AVG(<predicate>) or PROPORTION",
        ),
        ("CAST(x * y AS DOUBLE)", "x * y multiplies columns"),
        ("(x * y) + 1", "x * y multiplies columns"),
        ("1 + x * y", "x * y multiplies columns"),
        ("(x * y) * 2", "x * y multiplies columns"),
        ("2 * (x + y)", "x + y combines several columns"),
        ("x / (y > 1)", "a predicate inside arithmetic (y > 1)"),
        ("(x * y) / 2", "x * y multiplies columns"),
        ("-(x * y)", "x * y multiplies columns"),
        ("CAST(x AS TEXT)", "only numeric casts are allowed"),
        ("ABS(x)", "ABS(x) is not allowed here"),
        ("'a'", "'a' is not allowed here"),
        ("x * x", "x * x multiplies columns"),
    ],
)
def test_other_arguments_are_refused_with_the_reason(sql: str, why: str) -> None:
    with pytest.raises(Refused) as err:
        plain_columns(_expr(sql), _fail)
    assert why in str(err.value)
    assert err.value.node is not None and err.value.node.sql("duckdb") in str(err.value) + sql  # where to point


ROWS = """
SELECT * FROM (VALUES
    (1, 10.0, TRUE), (2, NULL, FALSE), (3, 30.0, NULL), (NULL, 40.0, TRUE),
    (5, -5.0, FALSE), (6, 60.0, TRUE), (NULL, NULL, NULL), (8, 0.0, FALSE)
) AS t(x, y, b)
"""


@pytest.mark.parametrize(
    "arg",
    [
        "x > 3",
        "NOT (x > 3) OR y IS NULL",
        "CASE WHEN x > 3 THEN y ELSE 0 END",
        "CASE WHEN x > 3 THEN y END",
        "CASE WHEN x > 3 THEN y WHEN y < 20 THEN 2 * x + 1 ELSE -1 END",
        "CASE x WHEN 1 THEN y WHEN 5 THEN 100 END",
        "CASE WHEN b THEN y ELSE x END",
        "IF(y BETWEEN 0 AND 35, x, 7)",
        "IF(x IN (1, 2, 3), y, NULL)",
        "CASE WHEN x > 3 THEN NULL ELSE y END",
        "((x > 3))",
        "(CASE WHEN (b) THEN (y) END)",
    ],
)
def test_branches_partition_the_rows_as_case_does(arg: str) -> None:
    """Each row adds, through the one branch it reaches, what the argument gives it in DuckDB."""
    parts = branches(_expr(arg), _fail)
    con = duckdb.connect()
    reach = ", ".join(
        f"CAST({'TRUE' if p.when is None else p.when.sql('duckdb')} AS INT) AS r{i}, {p.value.sql('duckdb')} AS v{i}"
        for i, p in enumerate(parts)
    )
    truth = arg if not isinstance(_expr(arg), exp.Predicate | exp.Not | exp.Or | exp.And) else f"CAST({arg} AS INT)"
    rows = con.execute(f"SELECT {truth} AS want, {reach} FROM ({ROWS})").fetchall()
    for row in rows:
        want, rest = row[0], row[1:]
        reached = [i for i in range(len(parts)) if rest[2 * i]]
        if want is None:  # CASE gives NULL: the row adds nothing, unless a branch value is NULL there
            assert all(rest[2 * i + 1] is None for i in reached), (arg, row)
        else:
            assert len(reached) == 1, (arg, row)
            assert rest[2 * reached[0] + 1] == want, (arg, row)


def test_a_predicate_is_two_query_sets_the_successes_and_the_failures() -> None:
    parts = branches(_expr("x > 3"), _fail)
    assert [(p.value.sql(), p.value_column) for p in parts] == [("1", False), ("0", False)]


def test_null_results_add_nothing_and_values_of_columns_are_marked() -> None:
    parts = branches(_expr("CASE WHEN x > 3 THEN y WHEN x = 1 THEN 5 END"), _fail)
    assert [(p.value.sql(), p.value_column) for p in parts] == [("y", True), ("5", False)]
    (plain,) = branches(_expr("(2 * y + 1)"), _fail)
    assert (plain.when, plain.value.sql(), plain.value_column) == (None, "2 * y + 1", True)
    (constant,) = branches(_expr("7"), _fail)
    assert (constant.value.sql(), constant.value_column) == ("7", False)


@pytest.mark.parametrize(
    ("arg", "why"),
    [
        ("CASE WHEN x > 3 THEN CASE WHEN y > 1 THEN 1 END END", "nested conditionals and predicates"),
        ("CASE WHEN x > 3 THEN y > 1 END", "nested conditionals and predicates"),
        ("CASE WHEN x + 1 THEN y END", "a CASE condition must be a predicate or a boolean column, not x + 1"),
        ("CASE WHEN x > 3 THEN x * y END", "x * y multiplies columns"),
        ("IF(x > 3, y + x, 0)", "y + x combines several columns"),
        ("x * y", "x * y multiplies columns"),
    ],
)
def test_conditionals_that_could_engineer_values_are_refused(arg: str, why: str) -> None:
    with pytest.raises(Refused) as err:
        branches(_expr(arg), _fail)
    assert why in str(err.value)
    assert err.value.node is not None
