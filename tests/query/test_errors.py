"""Errors name the problem precisely: positions with a caret, closest names, the construct."""

from __future__ import annotations

import pytest

from site_agent.errors import PolicyRefusal, QueryError, QuerySyntaxError, UnknownName, UnsupportedQuery
from site_agent.query import DisclosureRules, compile_query

from .conftest import Consortium


def _compile(c: Consortium, text: str, rules: DisclosureRules | None = None) -> None:
    compile_query(text, c.schema, rules or c.rules)


def test_syntax_error_has_line_column_and_caret(lung: Consortium) -> None:
    text = "SELECT sex, COUNT(*)\nFROM lung\nWHERE age = = 3\nGROUP BY sex"
    with pytest.raises(QuerySyntaxError) as info:
        _compile(lung, text)
    err = info.value
    assert (err.line, err.column) == (3, 13)
    assert str(err).endswith("WHERE age = = 3\n            ^")


def test_unclosed_quote_is_a_syntax_error(lung: Consortium) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        _compile(lung, "SELECT COUNT(*) FROM lung WHERE sex = 'x")
    assert info.value.line == 1


def test_unknown_column_suggests_closest(lung: Consortium) -> None:
    with pytest.raises(UnknownName) as info:
        _compile(lung, "SELECT sex, AVG(agee) FROM lung GROUP BY sex")
    err = info.value
    assert err.suggestions[0] == "age"
    assert (err.line, err.column) == (1, 17)
    assert "did you mean 'age'" in str(err)


def test_unknown_table_suggests_closest(lung: Consortium) -> None:
    with pytest.raises(UnknownName) as info:
        _compile(lung, "SELECT COUNT(*)\n  FROM lungs")
    assert info.value.suggestions == ["lung"]
    assert (info.value.line, info.value.column) == (2, 8)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("SELECT sex, COUNT(*) FROM lung GROUP BY sex ORDER BY age", "ORDER BY may only use released columns"),
        ("SELECT COUNT(*) FROM lung LIMIT 1.5", "LIMIT takes a whole number"),
        ("SELECT sex, COUNT(*) FROM lung GROUP BY sex HAVING AVG(age) > 3", "add it to the select list"),
        ("SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex QUALIFY n > 1", "QUALIFY"),
        ("SELECT * FROM lung", "SELECT *"),
        ("SELECT COUNT(*) FROM (SELECT * FROM lung) t", "subqueries"),
        ("SELECT SUM(age) / COUNT(*) FROM lung", "arithmetic on aggregates"),
        ("SELECT COUNT(*) FROM lung WHERE read_csv('x') = 1", "read_csv"),
        ("SELECT inst, COUNT(*) FROM lung GROUP BY inst", "no public domain"),
        ("SELECT MEDIAN(wt_loss) FROM lung", "grid"),
        ("SELECT MODE(age) FROM lung", "MODE"),
        ("SELECT QUANTILE_CONT(age, 0.123456) FROM lung", "4 decimal places"),
        ("SELECT COUNT(*) OVER () FROM lung", "window"),
        ("DELETE FROM lung", "only SELECT"),
    ],
)
def test_unsupported_constructs_are_named(lung: Consortium, text: str, fragment: str) -> None:
    with pytest.raises(UnsupportedQuery) as info:
        _compile(lung, text)
    assert fragment.lower() in str(info.value).lower()


def test_bare_column_is_neither_key_nor_aggregate(lung: Consortium) -> None:
    with pytest.raises(QueryError) as info:
        _compile(lung, "SELECT age, COUNT(*) FROM lung")
    assert "neither a group key nor an aggregate" in str(info.value)
    assert (info.value.line, info.value.column) == (1, 8)


def test_min_max_need_policy_permission(lung: Consortium) -> None:
    with pytest.raises(PolicyRefusal) as info:
        _compile(lung, "SELECT MAX(age) FROM lung")
    assert info.value.rule == "allow_min_max"


def test_identifier_columns_only_in_joins_and_count_distinct(generated: Consortium) -> None:
    compile_query("SELECT COUNT(DISTINCT pid) FROM patients", generated.schema, generated.rules)
    with pytest.raises(PolicyRefusal) as info:
        compile_query("SELECT COUNT(*) FROM patients WHERE pid = 's0-1'", generated.schema, generated.rules)
    assert info.value.rule == "identifiers"


def test_too_many_groups_refused(generated: Consortium) -> None:
    rules = DisclosureRules(max_groups=5)
    with pytest.raises(PolicyRefusal) as info:
        compile_query("SELECT ward, sex, COUNT(*) FROM patients GROUP BY ward, sex", generated.schema, rules)
    assert info.value.rule == "max_groups"


def test_unexposed_column_refused(lung: Consortium) -> None:
    rules = DisclosureRules(exposed={"lung": frozenset({"sex", "age"})})
    compile_query("SELECT sex, AVG(age) FROM lung GROUP BY sex", lung.schema, rules)
    with pytest.raises(PolicyRefusal) as info:
        compile_query("SELECT AVG(time) FROM lung", lung.schema, rules)
    assert info.value.rule == "exposed"


@pytest.mark.parametrize(
    "text, column, fragment",
    [
        ("SELECT COUNT(*) AS n FROM lung WHERE sex = 'one'", 44, "integer column sex with a string ('one')"),
        ("SELECT COUNT(*) AS n FROM lung WHERE age BETWEEN 40 AND 'x'", 57, "integer column age with a string ('x')"),
        ("SELECT COUNT(*) AS n FROM lung WHERE sex IN (1, 'two')", 49, "integer column sex with a string ('two')"),
    ],
)
def test_comparisons_with_the_wrong_kind_of_literal_fail_at_compile_time(
    lung: Consortium, text: str, column: int, fragment: str
) -> None:
    with pytest.raises(QueryError) as err:
        _compile(lung, text)
    assert fragment in str(err.value) and (err.value.line, err.value.column) == (1, column)


def test_numeric_strings_still_compare_with_numbers(lung: Consortium) -> None:
    """'1' and '40' compare as the numbers 1 and 40: the count equals pandas' on the pooled rows."""
    out = lung.query("SELECT COUNT(*) AS n FROM lung WHERE sex = '1' AND age BETWEEN '40' AND 70")
    pooled = lung.pooled["lung"]
    assert out.n.tolist() == [int(((pooled.sex == 1) & pooled.age.between(40, 70)).sum())]
