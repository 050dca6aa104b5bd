"""A committee member without data: its tables are the schema's, empty, so the same local SQL
yields the inputs' fill values; it has no SITE slice; pooled results are the data sites' own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from site_agent.agent.data import DUCKDB_TYPES, columns_of, empty_tables
from site_agent.errors import QueryError
from site_agent.mpc.fixed import decode_int
from site_agent.query import compile_query, execute, local_preaggregates

from .conftest import Consortium


def _two_and_neutral(c: Consortium) -> tuple[dict[str, Any], tuple[str, str], pd.DataFrame]:
    sites = tuple(c.cons)[:2]
    connections = {s: c.cons[s] for s in sites} | {"neutral": empty_tables(c.schema)}
    rows = pd.concat([c.cons[s].execute("SELECT * FROM patients").df().assign(site=s) for s in sites])
    return connections, (sites[0], sites[1]), rows


def test_empty_tables_follow_the_schema(generated: Consortium) -> None:
    con = empty_tables(generated.schema)
    columns = columns_of(con)
    assert set(columns) == set(generated.schema.tables)
    for name, table in generated.schema.tables.items():
        assert columns[name] == {c.name: DUCKDB_TYPES[c.dtype] for c in table.columns.values()}
        assert con.execute(f"SELECT COUNT(*) FROM {name}").fetchone() == (0,)
    assert columns["patients"]["smoker"] == "BOOLEAN" and columns["patients"]["age"] == "BIGINT"


def test_pooled_results_are_the_data_sites_own(generated: Consortium) -> None:
    connections, sites, rows = _two_and_neutral(generated)
    text = (
        "SELECT sex, COUNT(*) AS n, SUM(age) AS s, AVG(bmi) AS a, STDDEV(bmi) AS sd, MEDIAN(age) AS m, "
        "MIN(age) AS lo, MAX(bmi) AS hi, COUNT(DISTINCT ward) AS d FROM patients GROUP BY sex"
    )
    out = execute(compile_query(text, generated.schema, generated.rules, sites), connections, without_data={"neutral"})
    got = out.set_index("sex")
    for sex, grp in rows.groupby("sex"):
        row = got.loc[sex]
        assert row["n"] == len(grp) and row["s"] == grp.age.sum()
        np.testing.assert_allclose([row["a"], row["sd"]], [grp.bmi.mean(), grp.bmi.std()], rtol=1e-6)
        assert row["m"] == grp.age.median() and row["lo"] == grp.age.min()
        np.testing.assert_allclose(row["hi"], grp.bmi.max(), atol=1e-4)
        assert row["d"] == sum(g.ward.nunique() for _, g in grp.groupby("site"))
    joined = execute(
        compile_query(
            "SELECT COUNT(*) AS n, AVG(hba1c) AS h FROM patients p JOIN labs l ON p.pid = l.pid",
            generated.schema,
            generated.rules,
            sites,
        ),
        connections,
        without_data={"neutral"},
    )
    assert joined["n"].tolist() == [len(rows)]


def test_site_breakdown_has_the_data_sites_only(generated: Consortium) -> None:
    connections, sites, rows = _two_and_neutral(generated)
    text = "SELECT SITE, sex, COUNT(*) AS n, AVG(age) AS a, MEDIAN(bmi) AS m FROM patients GROUP BY ROLLUP(SITE, sex)"
    plan = compile_query(text, generated.schema, generated.rules, sites)
    assert plan.keys[0]["domain"] == list(sites)
    out = execute(plan, connections, without_data={"neutral"})
    assert list(dict.fromkeys(out["site"])) == [*sites, "(all)"]
    got = out.set_index(["site", "sex"])
    # Each site's (other) sex cell is empty: released as such, so left out of the result; an
    # empty cell protects nothing, and no sex cell needs protection here.
    assert "(other)" not in set(out["sex"])
    for (site, sex), grp in rows.groupby(["site", "sex"]):
        assert got.loc[(site, sex), "n"] == len(grp)
    for site, grp in rows.groupby("site"):
        assert got.loc[(site, "(all)"), "n"] == len(grp)
        np.testing.assert_allclose(got.loc[(site, "(all)"), "a"], grp.age.mean(), rtol=1e-6)
    assert got.loc[("(all)", "(all)"), "n"] == len(rows)


def test_a_member_without_data_has_no_site_slice(generated: Consortium) -> None:
    _, sites, _ = _two_and_neutral(generated)
    text = "SELECT SITE, sex, COUNT(*) AS n, MAX(bmi) AS hi FROM patients GROUP BY SITE, sex"
    plan = compile_query(text, generated.schema, generated.rules, sites)
    empty = empty_tables(generated.schema)
    inputs = local_preaggregates(plan, empty, "neutral", holds_data=False)
    fills = {s["name"]: s for s in plan.data["inputs"]}
    for name, vector in inputs.items():
        assert vector.shape[0] == plan.base_cells
        if fills[name]["encoding"] == "int":
            assert (decode_int(vector) == fills[name]["fill"]).all()
        else:
            assert len(set(vector.tolist())) == 1  # one fill value everywhere (the "no value" of MAX)
    # A data site's cells land in its own slice; the neutral member is not a SITE at all.
    own = local_preaggregates(plan, generated.cons[sites[1]], sites[1], 1)
    count = next(n for n, s in fills.items() if s["encoding"] == "int" and s["fill"] == 0)
    assert decode_int(own[count]).reshape(2, -1)[0].sum() == 0 and decode_int(own[count]).sum() > 0
    with pytest.raises(QueryError, match="not one of the plan's sites"):
        local_preaggregates(plan, empty, "neutral")
