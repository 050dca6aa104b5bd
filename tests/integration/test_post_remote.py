"""HAVING, ORDER BY, LIMIT and output names through three real agents: the networked client
assembles with the same post-processing as the in-process path, and matches DuckDB."""

from __future__ import annotations

import duckdb
import pandas as pd

from mpc_jupyter import Consortium

from .conftest import Running


def test_post_processing_and_names_over_the_network(lung: Running, pooled: pd.DataFrame) -> None:
    text = (
        "SELECT ph_ecog AS ecogScore, sex, COUNT(*) AS nPatients, AVG(age) AS meanAge FROM lung "
        "WHERE ph_ecog IS NOT NULL GROUP BY ecogScore, sex HAVING COUNT(*) >= 5 ORDER BY 3 DESC LIMIT 4"
    )
    assert isinstance(lung.client, Consortium)
    out = lung.client.query(text)
    con = duckdb.connect()
    con.register("lung", pooled)
    ref = con.execute(text).df()
    assert list(out.columns) == ["ecogScore", "sex", "nPatients", "meanAge"]
    assert (
        out[["ecogScore", "sex", "nPatients"]].values.tolist() == ref[["ecogScore", "sex", "nPatients"]].values.tolist()
    )
    assert out.attrs["plan"]["post"]["limit"] == 4
    assert out.attrs["suppressed"]["nPatients"] == [False] * 4
