"""What a DPO's approval leaves withheld (``approval_stops``), on shares, against plain numpy:
in a cell of 1 to k-1 persons only the hard stops, elsewhere the release rule's own; and a
ROLLUP planned under ``review = "failing"`` run in process, against pandas."""

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from site_agent.agent.planning import compile_query
from site_agent.policy import combine, load_policy
from site_agent.privacy.checks import approval_stops
from site_agent.query.execute import execute
from site_agent.query.schema_file import load_schema_file

from ..lung import LUNG_SCHEMA, lung_by_site
from ..mpc.helpers import run_open, shared

K = 5


def test_small_cells_keep_only_hard_stops_large_and_empty_cells_keep_the_rule() -> None:
    persons = np.array([0, 1, 4, 5, 120, -3, 2, 60])  # -3: a site's failure penalty, never "small"
    rng = np.random.default_rng(7)
    hard = rng.integers(0, 2, size=(3, persons.size))
    rule = np.maximum(hard, rng.integers(0, 2, size=(3, persons.size)))  # hard stops are rule stops
    rule[:, 1] = rule[:, 6] = 1  # small cells the rule withheld
    hard[:, 6] = [0, 1, 0]  # ... one of them also for a difference in its second row
    r, h, n = shared(rule, seed=1), shared(hard, seed=2), shared(persons, seed=3)
    got = run_open(lambda p: approval_stops(p, r[p.index], h[p.index], n[p.index], K)).view(np.int64)
    small = (persons >= 1) & (persons < K)
    expected = np.where(small[None, :], hard, rule)
    assert np.array_equal(got, expected)
    assert got[:, 1].tolist() == hard[:, 1].tolist() and got[:, 6].tolist() == [0, 1, 0]
    assert np.array_equal(got[:, [3, 4, 5, 7]], rule[:, [3, 4, 5, 7]])  # k or more, or failed: the rule


def _failing(tmp_path: Path) -> tuple[Any, Any, dict[str, Any], pd.DataFrame]:
    """The lung sites in DuckDB in one process, and a policy with ``review = "failing"``:
    (schema, combined policy, sites, pooled rows)."""
    (tmp_path / "schema.toml").write_text(LUNG_SCHEMA)
    schema = load_schema_file(tmp_path / "schema.toml")
    (tmp_path / "policy.toml").write_text(
        '[policy]\nanalysts = "*"\n[privacy]\nreview = "failing"\n[tables.lung]\ncolumns = "*"\nidentifiers = ["id"]\n'
    )
    policy = combine([load_policy(tmp_path / "policy.toml", "north")])
    frames = lung_by_site()
    sites = {}
    for site, frame in frames.items():
        sites[site] = con = duckdb.connect()
        con.register("frame", frame)
        con.execute("CREATE TABLE lung AS SELECT * FROM frame")
    return schema, policy, sites, pd.concat(frames.values(), ignore_index=True)


def test_approved_rollup_releases_small_cells_and_margins_as_pandas(tmp_path: Path) -> None:
    """In process: a ROLLUP with small cells under ``review = "failing"``. The release rule
    withholds the small cells and, by secondary suppression, some of their siblings; the flags
    approval leaves (no difference here) release every cell, each equal to pandas."""
    schema, policy, sites, pooled = _failing(tmp_path)
    text = "SELECT sex, ph_ecog, COUNT(*) AS n FROM lung GROUP BY ROLLUP(sex, ph_ecog)"
    compiled = compile_query(text, schema, policy, sites=tuple(sites))
    got = execute(compiled.plan, sites)
    assert not any(any(flags) for flags in got.attrs["suppressed"].values())  # approval leaves nothing
    cells = pooled.groupby(["sex", pooled.ph_ecog.fillna(-1)]).size()
    assert (cells < K).any()  # there were small cells to release
    rows = got[(got.sex != "(all)") & (got.ph_ecog != "(all)") & (got.ph_ecog != "(other)")]
    for _, row in rows.iterrows():
        assert row["n"] == cells.get((int(row["sex"]), float(row["ph_ecog"])), 0)
    margins = got[(got.sex != "(all)") & (got.ph_ecog == "(all)")].set_index("sex")["n"]
    assert margins.to_dict() == pooled.groupby("sex").size().to_dict()
    assert got[got.sex == "(all)"]["n"].tolist() == [len(pooled)]


def test_a_tracker_in_a_small_cell_stays_withheld_after_approval(tmp_path: Path) -> None:
    """ph_ecog = 3 is one patient: two sums over ages above a - 1 and above a (a, their age)
    differ by exactly that patient in that cell. The cell is small, so a DPO's approval may
    release its branch sets, but never a pair difference: the attacker's a - b (the patient's
    time) stays underivable."""
    schema, policy, sites, pooled = _failing(tmp_path)
    lone = pooled[pooled.ph_ecog == 3].iloc[0]
    age = int(lone.age)
    text = (
        f"SELECT ph_ecog, SUM(CASE WHEN age > {age - 1} THEN time ELSE 0 END) AS a, "
        f"SUM(CASE WHEN age > {age} THEN time ELSE 0 END) AS b FROM lung GROUP BY ph_ecog"
    )
    got = execute(compile_query(text, schema, policy, sites=tuple(sites)).plan, sites).set_index("ph_ecog")
    a, b = (pd.to_numeric(got.loc[3, c], errors="coerce") for c in ("a", "b"))
    assert np.isnan(a - b)  # what the attacker would have derived: lone.time
    assert lone.time == pytest.approx(pooled[(pooled.ph_ecog == 3) & (pooled.age > age - 1)].time.sum())
