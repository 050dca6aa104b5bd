"""The local step never fails on data (site_agent/query/failsafe.py), in one process.

Casts and other engine errors are NULL on the rows where they would raise; an out-of-range
pre-aggregate suppresses its cell; any other failure fails the whole query with one text that
names no site, whichever site failed. References are pandas on the pooled rows.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pytest

from site_agent.errors import LocalStepError
from site_agent.query import compile_query, execute, explain

from .conftest import Consortium, K

SUPPRESSED = f"<{K}"


def test_analyst_casts_become_try_cast_and_a_failing_cast_is_null(lung: Consortium) -> None:
    text = "SELECT COUNT(*) AS n FROM lung WHERE CAST(CASE WHEN age = 60 THEN 'x' ELSE '1' END AS INTEGER) = 1"
    plan = compile_query(text, lung.schema, lung.rules)
    sql = plan.data["local"][0]["sql"]
    assert "TRY_CAST(" in sql and "CAST(" not in sql.replace("TRY_CAST(", "")
    pooled = lung.pooled["lung"]
    assert int((pooled.age == 60).sum()) > 0  # the data this test relies on
    assert lung.query(text)["n"].tolist() == [int((pooled.age != 60).sum())]


@pytest.mark.parametrize(
    ("arg", "raises_on"),
    [
        ("age % (age - 60)", "age = 60"),  # integer modulo by zero
        ("age // (age - 60)", "age = 60"),  # integer division by zero
    ],
)
def test_engine_errors_make_the_value_null_on_that_row(lung: Consortium, arg: str, raises_on: str) -> None:
    """DuckDB raises on these rows (checked first); under the plan they are NULL: not counted."""
    con = next(iter(lung.cons.values()))
    with pytest.raises(duckdb.Error):
        con.execute(f"SELECT {arg} FROM lung WHERE {raises_on}").fetchall()
    # An aggregate's argument may only be affine in one column, so the expression goes in WHERE,
    # compared with a value no row has (DuckDB rewrites `x IS NOT NULL` and `x >= 0 OR x < 0` to
    # its operands' NULL checks, which raise nothing).
    cond = f"LENGTH({arg}) <> 12345" if arg.startswith("SUBSTRING") else f"({arg}) <> 12345"
    out = lung.query(f"SELECT COUNT(*) AS c FROM lung WHERE {cond}")
    pooled = lung.pooled["lung"]
    failing = int(pooled.eval(raises_on.replace("=", "==").replace(">==", ">=")).sum())
    expected = len(pooled) - failing
    assert out["c"].tolist() == [expected if expected >= K else SUPPRESSED]


def test_an_out_of_range_value_suppresses_its_cell_and_its_margins(lung: Consortium) -> None:
    text = (
        "SELECT sex, COUNT(*) AS n, SUM(CASE WHEN sex = 1 THEN time * 1e12 ELSE time END) AS s "
        "FROM lung GROUP BY ROLLUP(sex)"
    )
    out = lung.query(text).set_index("sex")
    pooled = lung.pooled["lung"]
    assert out.loc[1, "n"] == SUPPRESSED and out.loc[1, "s"] == SUPPRESSED  # 1e14 and more at every site
    assert out.loc["(all)", "s"] == SUPPRESSED
    women = pooled[pooled.sex == 2]
    assert out.loc[2, "n"] == len(women)
    np.testing.assert_allclose(out.loc[2, "s"], women.time.sum(), rtol=1e-6)


class _Failing:
    """A site connection whose engine raises with a message that quotes a value."""

    def execute(self, sql: str) -> Any:
        raise duckdb.ConversionException("Could not convert string 'patient-513' to INT32")


@pytest.mark.parametrize("failing", ["site0", "site2"])
def test_any_other_local_failure_fails_alike_naming_no_site(lung: Consortium, failing: str) -> None:
    plan = compile_query("SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex", lung.schema, lung.rules)
    cons = {name: (_Failing() if name == failing else con) for name, con in lung.cons.items()}
    with pytest.raises(LocalStepError) as err:
        execute(plan, cons)
    assert str(err.value) == LocalStepError.MESSAGE
    assert not any(name in str(err.value) for name in lung.cons) and "513" not in str(err.value)


def test_the_failure_check_is_a_declared_reveal_point(lung: Consortium) -> None:
    plan = compile_query("SELECT COUNT(*) AS n FROM lung", lung.schema, lung.rules)
    assert plan.data["steps"][0] == {"op": "check_local", "input": "local_failed"}
    assert "local_failed" in [r["name"] for r in plan.data["reveals"]]
    assert "local_failed" in explain(plan)


def test_expressions_that_cannot_raise_stay_bare(lung: Consortium) -> None:
    """TRY costs time on every row and keeps filters from the scan: only what can raise gets it."""
    bare = compile_query(
        "SELECT sex, AVG(age) AS a FROM lung WHERE age > 40 AND ph_ecog IS NOT NULL GROUP BY sex",
        lung.schema,
        lung.rules,
    )
    assert "TRY" not in bare.data["local"][0]["sql"]
    wrapped = compile_query("SELECT AVG(age * 2) AS a FROM lung WHERE age % (age - 60) > 0", lung.schema, lung.rules)
    sql = wrapped.data["local"][0]["sql"]
    assert "WHERE TRY(" in sql and "SUM(TRY(" in sql
