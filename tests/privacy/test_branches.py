"""A conditional aggregate's branch is a query set of its own, in one process: a branch that
holds one patient in a large cell is withheld, whether its value is a column (the attacker's SUM
would be the patient's value) or a constant (it would say the patient is in the data), and a
branch of k or more persons is released equal to pandas."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from site_agent.query import DisclosureRules, compile_query, execute
from site_agent.query.schema_file import load_schema_file

from ..lung import LUNG_SCHEMA, lung_by_site

TARGET = "age = 74 AND sex = 1 AND inst = 12"


@pytest.fixture(scope="module")
def lung(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, object], pd.DataFrame]:
    folder: Path = tmp_path_factory.mktemp("branches")
    (folder / "schema.toml").write_text(LUNG_SCHEMA)
    frames = lung_by_site()
    sites = {}
    for site, frame in frames.items():
        sites[site] = con = duckdb.connect()
        con.register("frame", frame)
        con.execute("CREATE TABLE lung AS SELECT * FROM frame")
    return load_schema_file(folder / "schema.toml"), sites, pd.concat(frames.values(), ignore_index=True)


def test_a_one_patient_branch_in_a_large_cell_is_withheld(lung: tuple) -> None:
    schema, sites, pooled = lung
    target = pooled[(pooled.age == 74) & (pooled.sex == 1) & (pooled.inst == 12)]
    assert len(target) == 1
    text = (
        f"SELECT sex, COUNT(*) AS n, SUM(CASE WHEN {TARGET} THEN time ELSE 0 END) AS t, "
        f"SUM(CASE WHEN {TARGET} THEN 1 ELSE 0 END) AS member FROM lung GROUP BY sex"
    )
    got = execute(compile_query(text, schema, DisclosureRules()), sites).set_index("sex")
    assert np.isnan(pd.to_numeric(got.loc[1, "t"], errors="coerce"))  # it would be the patient's time
    assert np.isnan(pd.to_numeric(got.loc[1, "member"], errors="coerce"))  # it would say the patient is here
    assert got.loc[1, "n"] == (pooled.sex == 1).sum()  # the cell itself is large and released


def test_a_branch_of_k_or_more_persons_is_released_as_pandas(lung: tuple) -> None:
    schema, sites, pooled = lung
    text = "SELECT sex, SUM(CASE WHEN age > 60 THEN time ELSE 0 END) AS t FROM lung GROUP BY sex"
    got = execute(compile_query(text, schema, DisclosureRules()), sites).set_index("sex")
    want = pooled[pooled.age > 60].groupby("sex").time.sum()
    for sex in (1, 2):
        assert float(got.loc[sex, "t"]) == pytest.approx(want[sex], abs=1e-3)


def test_total_minus_the_rest_is_not_derivable(lung: tuple) -> None:
    """Family 1 in one query: the cell's total and a branch holding all but one patient; their
    difference would be that patient's time, so one of the two is withheld."""
    schema, sites, pooled = lung
    text = (
        f"SELECT sex, SUM(time) AS total, SUM(CASE WHEN NOT ({TARGET}) THEN time END) AS rest "
        "FROM lung GROUP BY sex"
    )
    got = execute(compile_query(text, schema, DisclosureRules()), sites).set_index("sex")
    total, rest = (pd.to_numeric(got.loc[1, c], errors="coerce") for c in ("total", "rest"))
    assert np.isnan(total - rest)
    women = pooled[pooled.sex == 2].time.sum()
    assert float(got.loc[2, "total"]) == pytest.approx(women, abs=1e-3)  # no target there: released


def test_a_count_of_nobody_is_released_and_a_mean_of_nothing_is_not(lung: tuple) -> None:
    """A count over an empty branch is a released 0; a mean over no value is withheld (undefined),
    never a number."""
    schema, sites, _ = lung
    text = (
        "SELECT sex, COUNT(*) AS n, COUNT(CASE WHEN age > 100 THEN 1 END) AS old, "
        "AVG(CASE WHEN age > 100 THEN time END) AS old_time FROM lung GROUP BY sex"
    )
    got = execute(compile_query(text, schema, DisclosureRules()), sites).set_index("sex")
    for sex in (1, 2):
        assert got.loc[sex, "old"] == 0
        assert np.isnan(pd.to_numeric(got.loc[sex, "old_time"], errors="coerce"))
