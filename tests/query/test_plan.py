"""Plans: deterministic digests, transpilable local SQL, explain output, sans-I/O imports."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import sqlglot

from site_agent.errors import PolicyRefusal
from site_agent.query import compile_query, explain, rules_from_policy

from .conftest import Consortium

TEXT = "SELECT sex, COUNT(*) AS n, AVG(age) AS a, MEDIAN(age) AS m FROM lung WHERE age > 40 GROUP BY ROLLUP(sex)"


def test_same_text_same_digest(lung: Consortium) -> None:
    a = compile_query(TEXT, lung.schema, lung.rules)
    b = compile_query(TEXT, lung.schema, dataclasses.replace(lung.rules))
    assert a.digest() == b.digest()
    assert a.canonical_json() == b.canonical_json()


def test_digest_covers_rules_and_text(lung: Consortium) -> None:
    a = compile_query(TEXT, lung.schema, lung.rules)
    stricter = dataclasses.replace(lung.rules, min_cell_size=11)
    assert compile_query(TEXT, lung.schema, stricter).digest() != a.digest()
    assert compile_query(TEXT.replace("40", "41"), lung.schema, lung.rules).digest() != a.digest()


def test_local_sql_transpiles_to_other_dialects(lung: Consortium) -> None:
    plan = compile_query(TEXT, lung.schema, lung.rules)
    for q in plan.data["local"]:
        for dialect in ("postgres", "snowflake", "tsql"):
            assert sqlglot.transpile(q["sql"], read="duckdb", write=dialect)[0]


def test_plan_lists_every_reveal_point(lung: Consortium) -> None:
    plan = compile_query(TEXT, lung.schema, lung.rules)
    names = [r["name"] for r in plan.data["reveals"]]
    assert names[:2] == ["local_failed", "suppressed"]
    assert sorted(names[2:]) == sorted(n for o in plan.data["outputs"] for n in o["reveals"])
    reveal_steps = [s for s in plan.data["steps"] if s["op"] in ("check_local", "reveal", "reveal_flags")]
    assert len(reveal_steps) == 3


def test_explain_shows_sql_shares_steps_and_reveals(lung: Consortium) -> None:
    plan = compile_query(TEXT, lung.schema, lung.rules)
    text = explain(plan)
    assert plan.data["local"][0]["sql"] in text
    assert "hist0: per cell and bin, integer" in text
    assert "rounds" in text and "B " in text
    for r in plan.data["reveals"]:
        assert r["name"] in text


def test_measured_cost_matches_a_real_run(lung: Consortium) -> None:
    out = lung.query(TEXT)
    text = explain(compile_query(TEXT, lung.schema, lung.rules))
    total = next(line for line in text.splitlines() if line.strip().startswith("total"))
    assert int(total.split()[1]) == out.attrs["rounds"]


def test_query_package_is_sans_io() -> None:
    code = (
        "import sys, site_agent.query; "
        "banned = ('site_agent.net', 'site_agent.cli', 'mpc_jupyter', 'IPython'); "
        "print([m for m in sys.modules if m.startswith(banned)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rules_from_site_policies(generated: Consortium) -> None:
    from types import MappingProxyType

    from site_agent.policy.model import Policy, TablePolicy, combine

    a = Policy("a", min_cell_size=5, tables=MappingProxyType({"patients": TablePolicy(None, frozenset({"pid"}))}))
    b = Policy(
        "b",
        min_cell_size=8,
        tables=MappingProxyType({"patients": TablePolicy(frozenset({"sex", "age"}), frozenset({"pid"}))}),
    )
    rules = rules_from_policy(combine([a, b]), generated.schema)
    assert rules.min_cell_size == 8
    plan = compile_query(
        "SELECT sex, AVG(age), COUNT(DISTINCT pid) FROM patients GROUP BY sex", generated.schema, rules
    )
    assert plan.data["params"]["min_cell_size"] == 8
    refusals = {
        "SELECT AVG(bmi) FROM patients": ("b", "columns"),
        "SELECT COUNT(*) FROM labs": ("a", "tables"),
        "SELECT AVG(pid) FROM patients": ("a", "identifiers"),
        "SELECT MAX(age) FROM patients": ("a", "allow_min_max"),
    }
    for text, (site, rule) in refusals.items():
        with pytest.raises(PolicyRefusal) as refused:
            compile_query(text, generated.schema, rules)
        assert (refused.value.site, refused.value.rule) == (site, rule), text
