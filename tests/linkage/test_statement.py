"""Compiling ``SELECT COUNT(DISTINCT PERSON) FROM t``, and the analyst's assembly of its result."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.results import receipt_line
from site_agent.cli.linkage import write_keys
from site_agent.errors import QueryError, UnsupportedQuery
from site_agent.linkage.declaration import Linkage
from site_agent.linkage.statement import assemble, compile_linkage, is_linkage_query, selected_keys
from site_agent.mpc.sharing import deal
from site_agent.query.catalog import Column, DisclosureRules, Schema, Table

LINKAGE = Linkage("patients", "pid", ("national_id",))


def schema(table: str, person: str) -> Schema:
    return Schema.of([Table.of(table, [Column(person, "text", person=True), Column("age", "integer")])])


SCHEMA = schema("patients", "pid")


def test_compiles_alike_and_names_its_outputs() -> None:
    a = compile_linkage("SELECT COUNT(DISTINCT PERSON) AS n FROM patients", LINKAGE, DisclosureRules(), 3, SCHEMA)
    b = compile_linkage("SELECT COUNT(DISTINCT PERSON) AS n FROM patients", LINKAGE, DisclosureRules(), 3, SCHEMA)
    assert a.digest == b.digest and a.labels == ["n", "at 1 site", "at 2 sites", "at 3+ sites"]
    assert compile_linkage(
        "SELECT COUNT(DISTINCT person) FROM patients", LINKAGE, DisclosureRules(), 2, SCHEMA
    ).labels == [
        "distinct_persons",
        "at 1 site",
        "at 2+ sites",
    ]
    assert "set sizes" in a.explain()


@pytest.mark.parametrize(
    "text",
    [
        "SELECT COUNT(DISTINCT PERSON) FROM patients GROUP BY age",
        "WITH a AS (SELECT 1) SELECT COUNT(DISTINCT PERSON) FROM patients",
        "SELECT COUNT(DISTINCT PERSON) FROM patients JOIN patients q ON q.age = patients.age",
        "SELECT COUNT(DISTINCT PERSON), COUNT(*) FROM patients",
        "SELECT COUNT(DISTINCT PERSON) FROM admissions",
        "SELECT COUNT(DISTINCT PERSON) + 1 FROM patients",
    ],
)
def test_outside_the_first_slice_is_refused(text: str) -> None:
    assert is_linkage_query(text, SCHEMA)
    with pytest.raises(UnsupportedQuery):
        compile_linkage(text, LINKAGE, DisclosureRules(), 3, SCHEMA)


def test_a_where_is_validated_like_any_query_and_selects_the_persons_counted() -> None:
    plan = compile_linkage(
        "SELECT COUNT(DISTINCT PERSON) FROM patients WHERE age > 3 AND NOT (age = 7)",
        LINKAGE,
        DisclosureRules(),
        3,
        SCHEMA,
    )
    whole = compile_linkage("SELECT COUNT(DISTINCT PERSON) FROM patients", LINKAGE, DisclosureRules(), 3, SCHEMA)
    assert plan.digest != whole.digest and plan.data["ledger"]["sets"] == 1
    assert "patients.age > 3" in plan.data["ledger"]["sql"] and "age > 3" in plan.explain()
    assert "released to the analyst before by 1 to 12 site records" in " ".join(plan.explain().split())
    with pytest.raises(QueryError, match="nope"):
        compile_linkage(
            "SELECT COUNT(DISTINCT PERSON) FROM patients WHERE nope = 1", LINKAGE, DisclosureRules(), 3, SCHEMA
        )
    with pytest.raises(QueryError, match="pid"):  # the person column is never a condition
        compile_linkage(
            "SELECT COUNT(DISTINCT PERSON) FROM patients WHERE pid = 'a'", LINKAGE, DisclosureRules(), 3, SCHEMA
        )


def test_selected_keys_are_the_where_persons_with_keys(tmp_path: Path) -> None:
    keys_file = tmp_path / "linkage.duckdb"
    write_keys(keys_file, pd.Index(["a", "b", "c", "d"]), np.array([11, 12, 13, 14], dtype=np.uint64))
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE patients AS SELECT * FROM "
        "(VALUES ('a', 30), ('a', 60), ('b', 70), ('c', 20), ('e', 80)) t(pid, age)"
    )
    plan = compile_linkage(
        "SELECT COUNT(DISTINCT PERSON) FROM patients WHERE age > 50", LINKAGE, DisclosureRules(), 3, SCHEMA
    )
    keys, members = selected_keys(plan, con, keys_file)
    assert sorted(keys.tolist()) == [11, 12]  # e has no key; c and d are outside the WHERE
    assert members.sizes().tolist() == [[2]]
    none, nobody = selected_keys(plan, con, keys_file, holds_data=False)
    assert none.size == 0 and nobody.sizes().tolist() == [[0]]
    assert plan.opened({}).tolist() == [[True]]


def test_refused_without_a_declaration_or_under_rounding() -> None:
    text = "SELECT COUNT(DISTINCT PERSON) FROM patients"
    with pytest.raises(UnsupportedQuery, match="linkage"):
        compile_linkage(text, None, DisclosureRules(), 3, SCHEMA)
    with pytest.raises(UnsupportedQuery, match="round_counts"):
        compile_linkage(text, LINKAGE, DisclosureRules(round_counts=5), 3, SCHEMA)


def test_a_real_person_column_is_not_the_pseudo_column() -> None:
    assert not is_linkage_query("SELECT COUNT(DISTINCT person) FROM t", schema("t", "person"))
    assert not is_linkage_query("SELECT COUNT(*) FROM patients", SCHEMA)


def test_assembly_marks_withheld_counts_missing() -> None:
    plan = compile_linkage("SELECT COUNT(DISTINCT PERSON) FROM patients", LINKAGE, DisclosureRules(), 3, SCHEMA)
    opened = np.array([220, 0, 0, 0, 0, 1, 1, 1], dtype=np.uint64)  # kept counts, then stop flags
    shares = deal(opened)
    meta = {"kind": "linkage", "plan": plan.data, "digest": plan.digest, "labels": plan.labels}
    frame = assemble(meta, shares)
    assert frame.iloc[0, 0] == 220 and frame.iloc[0, 1:].isna().all()
    assert frame.attrs["plan_digest"] == plan.digest
    assert frame.attrs["suppressed"] == {
        "distinct_persons": [False],
        "at 1 site": [True],
        "at 2 sites": [True],
        "at 3+ sites": [True],
    }
    frame.attrs.update({"plan": plan.data, "sites": ["a", "b", "c"], "seconds": 1.0})
    assert "3 sites" in receipt_line(frame)  # the notebook's receipt line needs no planner plan
