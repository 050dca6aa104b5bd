"""Persons, not rows (site_agent/privacy/persons.py), in one process: which joins and which uses
of person and identifier columns the rule lets through, on sqlglot trees as the parser resolves
them (every column qualified by its table alias). The attacks these rules stop are run against
real agents in test_release_rule.py (families 2 and 4); here each decision is pinned alone."""

from __future__ import annotations

from typing import NoReturn

import pytest
import sqlglot
import sqlglot.expressions as exp

from site_agent.privacy.persons import check_join, identifier_uses

PERSONS = {"a": "pid", "b": "pid", "c": None}


class Refused(Exception):
    def __init__(self, node: exp.Expression, message: str) -> None:
        super().__init__(message)
        self.node = node


def _fail(node: exp.Expression, message: str) -> NoReturn:
    raise Refused(node, message)


def _select(sql: str) -> exp.Select:
    tree = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(tree, exp.Select)
    return tree


def _join(on: str, alias: str = "b", table: str = "u") -> None:
    tree = _select(f"SELECT COUNT(*) FROM t a JOIN {table} {alias} ON {on}")
    check_join(tree.args["joins"][0].args["on"], alias, ["a"], PERSONS, _fail)


@pytest.mark.parametrize(
    "on",
    [
        "b.pid = a.pid",
        "a.pid = b.pid",
        "(b.pid = a.pid)",
        "b.pid = a.pid AND b.visit = a.visit",
        "(b.x = a.y) AND (a.pid = b.pid)",
    ],
)
def test_joins_along_person_columns_pass(on: str) -> None:
    _join(on)


@pytest.mark.parametrize(
    ("on", "why"),
    [
        (
            "TRUE",
            "JOIN ... ON takes equalities between columns of the two tables, not TRUE (put other conditions in WHERE)",
        ),
        ("b.pid = 5", "equalities between columns of the two tables, not b.pid = 5"),
        ("b.pid > a.pid", "not b.pid > a.pid"),
        ("b.pid = a.pid OR b.x = a.x", "not b.pid = a.pid OR b.x = a.x"),
        ("b.pid = a.pid AND b.age = 74", "not b.age = 74"),
        ("b.x = b.pid", "must compare a column of b with a column of an earlier table"),
        ("a.x = a.pid", "must compare a column of b with a column of an earlier table"),
        ("b.pid = z.pid", "must compare a column of b with a column of an earlier table"),
        ("b.x = a.x", "ON must include an equality of the two tables' person columns (a.pid, b.pid)"),
        ("b.pid = a.x", "ON must include an equality of the two tables' person columns"),
        ("b.x = a.pid", "ON must include an equality of the two tables' person columns"),
    ],
)
def test_other_joins_are_refused_with_the_reason(on: str, why: str) -> None:
    with pytest.raises(Refused) as err:
        _join(on)
    assert why in str(err.value)
    assert err.value.node is not None


def test_a_table_without_a_person_column_cannot_be_joined() -> None:
    with pytest.raises(Refused) as err:
        _join("c.pid = a.pid", alias="c", table="v")
    assert str(err.value) == "joins follow persons only: table c declares no person column in the schema"
    assert err.value.node.sql("duckdb") == "c.pid = a.pid"


def test_the_refusal_points_at_the_offending_part() -> None:
    with pytest.raises(Refused) as err:
        _join("b.pid = a.pid AND b.age = 74")
    assert err.value.node.sql("duckdb") == "b.age = 74"


COLUMNS = {"a.pid", "b.pid", "a.mrn"}


def _uses(sql: str) -> list[str]:
    return [c.sql("duckdb") for c in identifier_uses(_select(sql), COLUMNS)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM t a JOIN u b ON b.pid = a.pid",
        "SELECT COUNT(DISTINCT a.pid) FROM t a",
        "SELECT COUNT(DISTINCT a.mrn), AVG(a.age) FROM t a WHERE a.age > 70",
        "SELECT COUNT(*) FROM t a WHERE pid = 5",  # unqualified: not a resolved column of the rule
    ],
)
def test_allowed_uses(sql: str) -> None:
    assert _uses(sql) == []


@pytest.mark.parametrize(
    ("sql", "forbidden"),
    [
        ("SELECT COUNT(*) FROM t a WHERE a.pid = 5", ["a.pid"]),
        ("SELECT COUNT(DISTINCT CASE WHEN a.mrn = 5 THEN 1 END) FROM t a", ["a.mrn"]),
        ("SELECT COUNT(a.pid) FROM t a", ["a.pid"]),
        ("SELECT SUM(a.mrn) FROM t a", ["a.mrn"]),
        ("SELECT COUNT(DISTINCT a.pid + 0) FROM t a", ["a.pid"]),
        ("SELECT a.pid % 2 AS g, COUNT(*) FROM t a GROUP BY g", ["a.pid"]),
        ("SELECT COUNT(*) FROM t a JOIN u b ON b.pid = a.pid WHERE b.pid = a.mrn", ["b.pid", "a.mrn"]),
        ("SELECT COUNT(a.pid + 1) FROM t a", ["a.pid"]),
        ("SELECT COUNT(DISTINCT a.pid), SUM(a.mrn) FROM t a", ["a.mrn"]),
        ("SELECT COUNT(DISTINCT a.pid) FROM t a WHERE a.pid = 5", ["a.pid"]),
    ],
)
def test_forbidden_uses_are_each_reported(sql: str, forbidden: list[str]) -> None:
    assert _uses(sql) == forbidden
