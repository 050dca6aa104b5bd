"""A real local consortium for the notebook tests: lifelines' lung data split by ``inst``.

Three agent processes (mutual TLS on loopback, DuckDB over Parquet files), one IPython
shell with ``%load_ext mpc_jupyter`` connected to them as its analyst. The pooled data stays
in the test so every result can be compared with pandas.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import matplotlib
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from lifelines.datasets import load_lung

from mpc_jupyter.demo.consortium import AgentProcesses, SiteSpec, TableSpec, build_consortium

matplotlib.use("Agg")

SITES = ("north", "central", "south")
SCHEMA = """
[tables.lung]
id = "integer"
inst = "integer"
time = "float"
status = { type = "integer", domain = [0, 1] }
age = { type = "integer", grid = [30, 90, 1] }
sex = { type = "integer", domain = [1, 2] }
ph_ecog = { type = "integer", domain = [0, 1, 2, 3] }
ph_karno = "float"
pat_karno = "float"
meal_cal = "float"
wt_loss = "float"
"""


@dataclass
class Lung:
    """The running consortium: its file, its agents and the pooled data."""

    path: Path
    agents: AgentProcesses
    pooled: pd.DataFrame


def lung_frame() -> pd.DataFrame:
    """lifelines' lung (status 1 = dead), dots in names made underscores, an ``id`` added."""
    df = load_lung().rename(columns=lambda c: c.replace(".", "_"))
    df.insert(0, "id", range(1, len(df) + 1))
    for column in ("inst", "ph_ecog"):
        df[column] = df[column].astype("Int64")
    return df


def start_lung(root: Path) -> Lung:
    """Write the three sites' Parquet files and consortium under ``root``; start the agents."""
    df = lung_frame()
    site_of = df["inst"].fillna(0).astype(int) % 3
    specs = []
    root.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(SITES):
        path = root / f"{name}.parquet"
        con = duckdb.connect()
        con.register("part", df[site_of == index])
        con.execute(f"COPY (SELECT * FROM part) TO '{path}' (FORMAT parquet)")
        specs.append(SiteSpec(name, {"lung": TableSpec(path, identifiers=["id"])}))
    consortium = build_consortium(root / "consortium", specs, SCHEMA)
    agents = AgentProcesses(consortium.parent, SITES).start()
    return Lung(consortium, agents, df)


@pytest.fixture(scope="session")
def lung(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lung]:
    running = start_lung(tmp_path_factory.mktemp("lung"))
    yield running
    running.agents.stop()


@pytest.fixture(scope="session")
def ip(lung: Lung) -> Iterator[InteractiveShell]:
    """An IPython shell with the extension loaded and connected to the lung consortium."""
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "mpc_jupyter")
    shell.run_line_magic("mpc", f"connect {lung.path}")
    yield shell
    shell.run_line_magic("mpc", "close")
