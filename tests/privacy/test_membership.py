"""A site's persons in each query set of a plan (the release ledger's membership query, run on
DuckDB in one process), against pandas: the cell itself, each CASE branch and its ELSE, a
condition that is NULL on some rows (in no set), persons with several rows counted once, and
ROLLUP margins."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from site_agent.query import DisclosureRules, compile_query
from site_agent.query.membership import membership
from site_agent.query.schema_file import load_schema_file

from ..lung import LUNG_SCHEMA, lung_by_site

TEXT = (
    "SELECT sex, COUNT(*) AS n, SUM(CASE WHEN age > 60 THEN time ELSE 0 END) AS t, "
    "COUNT(CASE WHEN meal_cal > 1000 THEN 1 END) AS m FROM lung GROUP BY ROLLUP(sex)"
)


def _per_cell(rows: pd.DataFrame) -> list[int]:
    """Distinct persons per output cell: sex 1, sex 2, the (other) cell, the ROLLUP total."""
    by_sex = rows.groupby("sex").id.nunique()
    return [int(by_sex.get(1, 0)), int(by_sex.get(2, 0)), 0, int(rows.id.nunique())]


def test_each_query_set_holds_the_persons_pandas_finds(tmp_path: Path) -> None:
    (tmp_path / "schema.toml").write_text(LUNG_SCHEMA)
    schema = load_schema_file(tmp_path / "schema.toml")
    lung = pd.concat(lung_by_site().values(), ignore_index=True)
    twice = lung[lung.age > 70].head(5)  # five persons with a second row: still one person each
    rows = pd.concat([lung, twice], ignore_index=True)
    con = duckdb.connect()
    con.register("rows", rows)
    con.execute("CREATE TABLE lung AS SELECT * FROM rows")
    plan = compile_query(TEXT, schema, DisclosureRules())
    found = membership(plan, con, None, True)
    assert found is not None
    sizes = sorted(found.sizes().tolist())
    expected = sorted(
        [
            _per_cell(rows),  # the cell itself (no WHERE)
            _per_cell(rows[rows.age > 60]),  # the CASE branch
            _per_cell(rows[~(rows.age > 60)]),  # its ELSE 0 (NULL ages included)
            _per_cell(rows[rows.meal_cal > 1000]),  # NULL meal_cal: in no set
        ]
    )
    assert sizes == expected
    assert found.sizes().shape == (4, plan.out_cells)
    assert np.array_equal(found.sizes()[:, 3], found.sizes()[:, 0] + found.sizes()[:, 1])  # no person of both sexes
