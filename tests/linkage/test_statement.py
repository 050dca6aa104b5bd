"""Compiling ``SELECT COUNT(DISTINCT PERSON) FROM t``, and the analyst's assembly of its result."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_jupyter.results import receipt_line
from site_agent.errors import UnsupportedQuery
from site_agent.linkage.declaration import Linkage
from site_agent.linkage.statement import assemble, compile_linkage, is_linkage_query
from site_agent.mpc.sharing import deal
from site_agent.query.catalog import Column, DisclosureRules, Schema, Table

LINKAGE = Linkage("patients", "pid", ("national_id",))


def schema(table: str, person: str) -> Schema:
    return Schema.of([Table.of(table, [Column(person, "text", person=True), Column("age", "integer")])])


SCHEMA = schema("patients", "pid")


def test_compiles_alike_and_names_its_outputs() -> None:
    a = compile_linkage("SELECT COUNT(DISTINCT PERSON) AS n FROM patients", LINKAGE, DisclosureRules(), 3)
    b = compile_linkage("SELECT COUNT(DISTINCT PERSON) AS n FROM patients", LINKAGE, DisclosureRules(), 3)
    assert a.digest == b.digest and a.labels == ["n", "at 1 site", "at 2 sites", "at 3+ sites"]
    assert compile_linkage("SELECT COUNT(DISTINCT person) FROM patients", LINKAGE, DisclosureRules(), 2).labels == [
        "distinct_persons",
        "at 1 site",
        "at 2+ sites",
    ]
    assert "set sizes" in a.explain()


@pytest.mark.parametrize(
    "text",
    [
        "SELECT COUNT(DISTINCT PERSON) FROM patients WHERE age > 3",
        "SELECT COUNT(DISTINCT PERSON) FROM patients GROUP BY age",
        "SELECT COUNT(DISTINCT PERSON), COUNT(*) FROM patients",
        "SELECT COUNT(DISTINCT PERSON) FROM admissions",
        "SELECT COUNT(DISTINCT PERSON) + 1 FROM patients",
    ],
)
def test_outside_the_first_slice_is_refused(text: str) -> None:
    assert is_linkage_query(text, SCHEMA)
    with pytest.raises(UnsupportedQuery):
        compile_linkage(text, LINKAGE, DisclosureRules(), 3)


def test_refused_without_a_declaration_or_under_rounding() -> None:
    text = "SELECT COUNT(DISTINCT PERSON) FROM patients"
    with pytest.raises(UnsupportedQuery, match="linkage"):
        compile_linkage(text, None, DisclosureRules(), 3)
    with pytest.raises(UnsupportedQuery, match="round_counts"):
        compile_linkage(text, LINKAGE, DisclosureRules(round_counts=5), 3)


def test_a_real_person_column_is_not_the_pseudo_column() -> None:
    assert not is_linkage_query("SELECT COUNT(DISTINCT person) FROM t", schema("t", "person"))
    assert not is_linkage_query("SELECT COUNT(*) FROM patients", SCHEMA)


def test_assembly_marks_withheld_counts_missing() -> None:
    plan = compile_linkage("SELECT COUNT(DISTINCT PERSON) FROM patients", LINKAGE, DisclosureRules(), 3)
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
