"""A consortium whose sites keep their data in different engines, under different local names.

* north: its lung table lives in a real PostgreSQL server (``public."Lung Data"``, R's column
  names ``ph.ecog``, ``ph.karno``, ``pat.karno``, ``meal.cal``, ``wt.loss``), read by a
  read-only role; the local step runs inside PostgreSQL by push-down.
* central: a CSV file with R's names too, sex coded ``"M"``/``"F"`` and status ``0``/``1``,
  mapped to the consortium's codes in agent.toml (a DuckDB view).
* south: a CSV file under the consortium's own names.

The answers equal pandas on the pooled rows (under the consortium's names), as for an all-DuckDB
consortium.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from site_agent.config import load_agent
from site_agent.tomlfile import toml_str
from tests.data.pgserver import PostgresServer

from .conftest import Running, start_retrying

R_NAMES = {"ph_ecog": "ph.ecog", "ph_karno": "ph.karno", "pat_karno": "pat.karno", "meal_cal": "meal.cal",
           "wt_loss": "wt.loss"}  # fmt: skip
PG_TYPES = {"id": "bigint", "inst": "integer", "time": "double precision", "status": "integer", "age": "integer",
            "sex": "integer"}  # fmt: skip
PG_TABLE = 'public."Lung Data"'


def _replace_table_section(agent_toml: Path, section: str) -> None:
    """Put ``section`` in place of the ``[tables.lung]`` the builder wrote (a file path)."""
    text = agent_toml.read_text()
    at = text.rindex("\n[tables.lung]\n")
    end = text.index("\n", text.index("path = ", at))
    agent_toml.write_text(text[:at] + "\n" + section + text[end + 1 :])


def _columns_section() -> str:
    return "[tables.lung.columns]\n" + "".join(f"{k} = {toml_str(v)}\n" for k, v in R_NAMES.items())


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Running]:
    def customize(folder: Path) -> None:
        from tests.lung import lung_by_site

        frames = lung_by_site()
        north = frames["north"].rename(columns=R_NAMES)
        rows = [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in north.itertuples(False)]
        types = {c: PG_TYPES.get(c, "double precision") for c in north.columns}
        postgres.load(("public", "Lung Data"), types, rows)
        _replace_table_section(
            folder / "sites" / "north" / "agent.toml",
            f"[tables.lung]\nsource = {toml_str(postgres.url())}\ntable = {toml_str(PG_TABLE)}\n" + _columns_section(),
        )
        central = frames["central"].rename(columns=R_NAMES)
        central["sex"] = central["sex"].map({1: "M", 2: "F"})
        central["status"] = central["status"] - 1
        path = folder.parent / "data" / "central-local.csv"
        central.to_csv(path, index=False)
        _replace_table_section(
            folder / "sites" / "central" / "agent.toml",
            f"[tables.lung]\npath = {toml_str(str(path))}\n"
            + _columns_section()
            + '[tables.lung.values.sex]\nM = 1\nF = 2\n[tables.lung.values.status]\n"0" = 1\n"1" = 2\n',
        )

    running = start_retrying(tmp_path_factory.mktemp("postgres") / "mixed", {}, None, customize=customize)
    try:
        yield running
    finally:
        running.close()


def test_the_north_site_reads_postgresql(mixed: Running) -> None:
    table = load_agent(mixed.agent_toml("north")).tables["lung"]
    assert table.path is None and table.format == "postgresql" and table.local_table == PG_TABLE
    north = next(s for s in mixed.client.status() if s.site == "north")
    assert north.online
    # the exposed columns under the consortium's names (id is an identifier), read from PostgreSQL
    assert sorted(north.tables["lung"]["columns"]) == sorted(c for c in mixed.pooled.columns if c != "id")


def test_grouped_counts_means_and_sds_equal_pandas(mixed: Running) -> None:
    pooled = mixed.pooled
    out = mixed.client.query(
        "SELECT sex, status, COUNT(*) AS n, AVG(age) AS mean_age, STDDEV(ph_karno) AS sd_karno, "
        "AVG(wt_loss) AS mean_wt_loss, COUNT(meal_cal) AS with_meal FROM lung GROUP BY sex, status"
    )
    got = out.set_index(["sex", "status"]).sort_index()
    ref = pooled.groupby(["sex", "status"])
    assert got.index.tolist() == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert got["n"].tolist() == ref.size().tolist()
    assert got["with_meal"].tolist() == ref.meal_cal.count().tolist()
    np.testing.assert_allclose(got["mean_age"], ref.age.mean(), rtol=1e-6)
    np.testing.assert_allclose(got["sd_karno"], ref.ph_karno.std(), rtol=1e-6)
    np.testing.assert_allclose(got["mean_wt_loss"], ref.wt_loss.mean(), rtol=1e-6)


def test_keys_median_and_histogram_through_the_mapping_equal_pandas(mixed: Running) -> None:
    pooled = mixed.pooled
    out = mixed.client.query(
        "SELECT ph_ecog, COUNT(*) AS n, MEDIAN(age) AS median_age FROM lung WHERE ph_ecog IS NOT NULL "
        "AND ph_ecog < 3 GROUP BY ph_ecog"
    )
    got = out.set_index("ph_ecog").sort_index()
    ref = pooled[pooled.ph_ecog < 3].groupby("ph_ecog")
    assert got.loc[3, "n"] == 0 and pd.isna(got.loc[3, "median_age"])  # the domain's empty cell
    got = got.loc[[0, 1, 2]]
    assert got["n"].tolist() == ref.size().tolist()
    np.testing.assert_allclose(got["median_age"].astype(float), ref.age.median(), atol=0.5)  # age grid step 1


def test_per_site_breakdown_keeps_each_engine_s_rows_apart(mixed: Running) -> None:
    out = mixed.client.query(
        "SELECT SITE AS hospital, COUNT(*) AS n, AVG(time) AS mean_time FROM lung GROUP BY hospital"
    )
    got = out.set_index("hospital")
    for site, frame in mixed.frames.items():
        assert got.loc[site, "n"] == len(frame)
        assert got.loc[site, "mean_time"] == pytest.approx(frame.time.mean(), rel=1e-6)


def test_the_reader_role_cannot_write(postgres: PostgresServer) -> None:
    import psycopg

    with psycopg.connect(postgres.url(), autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"DELETE FROM {PG_TABLE}")


def test_check_reads_each_engine_and_counts_like_pandas(mixed: Running) -> None:
    from .test_happy_path import agent_cli

    for site, frame in mixed.frames.items():
        done = agent_cli("check", "--config", str(mixed.agent_toml(site)))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"ok    data: lung ({len(frame)} rows)" in done.stdout
        (line,) = [x for x in done.stdout.splitlines() if "data vs schema" in x]
        for column in ("meal_cal", "wt_loss"):
            nulls = int(frame[column].isna().sum())
            assert (f"lung.{column}: {nulls} NULLs" in line) == (nulls > 0), (site, column, line)
