"""Datasets split across three in-process sites (DuckDB), for the model tests."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pandas as pd

from site_agent.query.catalog import KeyValue, Schema, schema_from_duckdb


def split(
    frame: pd.DataFrame,
    table: str,
    domains: dict[str, list[KeyValue]] | None = None,
    person: str | None = None,
) -> tuple[dict[str, Any], Schema]:
    """``frame`` cut into three consecutive parts, one DuckDB connection per site, and the schema."""
    cons: dict[str, Any] = {}
    for i, idx in enumerate(np.array_split(np.arange(len(frame)), 3)):
        con = duckdb.connect()
        con.register("part", frame.iloc[idx].reset_index(drop=True))
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM part")
        con.unregister("part")
        cons[f"site{i}"] = con
    schema = schema_from_duckdb(cons["site0"], domains=domains, persons={table: person} if person else None)
    return cons, schema


def relative(ours: pd.Series, reference: pd.Series) -> float:
    """Largest relative difference, matched by parameter name."""
    ours = ours.reindex(reference.index)
    return float(np.max(np.abs(ours.to_numpy() - reference.to_numpy()) / np.abs(reference.to_numpy())))


def in_se(ours: pd.DataFrame, reference: pd.Series, se: pd.Series) -> float:
    """Largest coefficient difference in units of the reference standard error."""
    diff = ours["coef"].reindex(reference.index) - reference
    return float(np.max(np.abs(diff.to_numpy()) / se.to_numpy()))
