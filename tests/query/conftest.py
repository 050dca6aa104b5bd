"""Three-site fixtures: generated patients, and the lifelines ``lung`` data split by ``inst``."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_lung

from site_agent.query import DisclosureRules, Schema, compile_query, execute, schema_from_duckdb

K = 5


def _connections(frames: dict[str, dict[str, pd.DataFrame]]) -> dict[str, Any]:
    cons = {}
    for site, tables in frames.items():
        con = duckdb.connect()
        for name, df in tables.items():
            con.register("incoming", df)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM incoming")
            con.unregister("incoming")
        cons[site] = con
    return cons


class Consortium:
    """Sites' connections, the pooled plaintext, the schema and rules: runs queries end to end."""

    def __init__(self, frames: dict[str, dict[str, pd.DataFrame]], schema: Schema, rules: DisclosureRules) -> None:
        self.cons = _connections(frames)
        self.pooled = {
            t: pd.concat([f[t] for f in frames.values()], ignore_index=True) for t in next(iter(frames.values()))
        }
        self.schema = schema
        self.rules = rules

    def query(self, text: str) -> pd.DataFrame:
        return execute(compile_query(text, self.schema, self.rules, tuple(self.cons)), self.cons)


def _patients(rng: np.random.Generator, n: int, site: int) -> pd.DataFrame:
    start = pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 2000, n), unit="D")
    return pd.DataFrame(
        {
            "pid": [f"s{site}-{i}" for i in range(n)],
            "sex": rng.choice(["F", "M"], n),
            "region": rng.choice(["north", "south", "east"], n, p=[0.6, 0.3993, 0.0007]),
            "age": rng.integers(18, 95, n),
            "bmi": np.round(rng.normal(27 + site, 4, n), 3),
            "sbp": np.where(rng.random(n) < 0.05, np.nan, rng.normal(130, 15, n)),
            "smoker": rng.random(n) < 0.3,
            "died": (rng.random(n) < 0.2).astype(int),
            "followup": rng.exponential(3.0, n),
            "admitted": start,
            "discharged": start + pd.to_timedelta(rng.integers(1, 30, n), unit="D"),
            "ward": rng.choice(["cardio", "onco", "icu"], n),
        }
    )


@pytest.fixture(scope="session")
def generated() -> Consortium:
    rng = np.random.default_rng(20240601)
    frames = {}
    for site, n in enumerate((1500, 2500, 1000)):
        patients = _patients(rng, n, site)
        labs = pd.DataFrame({"pid": patients.pid, "hba1c": np.round(rng.normal(6, 1, n), 2)})
        frames[f"site{site}"] = {"patients": patients, "labs": labs}
    con = _connections({"probe": frames["site0"]})["probe"]
    schema = schema_from_duckdb(
        con,
        domains={
            "patients.sex": ["F", "M"],
            "patients.region": ["north", "south", "east"],
            "patients.ward": ["cardio", "onco", "icu"],
            "patients.smoker": [False, True],
        },
        grids={"patients.age": (0, 120, 1), "patients.bmi": (10, 50, 0.01), "labs.hba1c": (2, 15, 0.01)},
        persons={"patients": "pid", "labs": "pid"},
    )
    rules = DisclosureRules(min_cell_size=K, allow_min_max=True, identifiers=frozenset({"pid"}))
    return Consortium(frames, schema, rules)


@pytest.fixture(scope="session")
def lung() -> Consortium:
    df = load_lung().rename(columns=lambda c: c.replace(".", "_"))
    site = df["inst"].fillna(0).astype(int) % 3
    frames = {f"site{s}": {"lung": df[site == s].reset_index(drop=True)} for s in range(3)}
    con = _connections({"probe": frames["site0"]})["probe"]
    schema = schema_from_duckdb(
        con,
        domains={"lung.sex": [1, 2], "lung.status": [0, 1], "lung.ph_ecog": [0, 1, 2, 3, None]},
        grids={"lung.age": (0, 120, 1), "lung.time": (0, 1100, 1), "lung.meal_cal": (0, 3000, 1)},
    )
    return Consortium(frames, schema, DisclosureRules(min_cell_size=K))
