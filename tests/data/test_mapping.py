"""Column and code mapping: a site's local names and codes presented as the consortium's.

Checked against pandas on the same rows: the mapped view in DuckDB (CSV, Parquet and DuckDB
files) and the mapped subquery in PostgreSQL must give what renaming and recoding the frame
gives.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from site_agent.config import TableSource, _table
from site_agent.data import open_files, open_server, open_sources
from site_agent.errors import ConfigError, QueryError
from site_agent.tomlfile import read_toml

from .pgserver import PostgresServer

LOCAL = pd.DataFrame(
    {
        "Patient ID": [1, 2, 3, 4, 5, 6],
        "ph.ecog": [0, 1, 1, 2, None, 3],
        "Sex": ["m", "f", "f", "m", "x", "f"],
        "wt.loss": [5.0, None, 2.5, -1.0, 0.0, 7.5],
    }
)
MAPPED = {"id": "Patient ID", "ph_ecog": "ph.ecog", "wt_loss": "wt.loss"}
CODES = {"sex": {"m": 1, "f": 2}}
QUERY = "SELECT sex, COUNT(*) AS n, SUM(ph_ecog) AS e, SUM(wt_loss) AS w, COUNT(id) AS ids FROM lung GROUP BY sex"


def reference() -> pd.DataFrame:
    """The same numbers from pandas: rename, recode (unmapped code -> NULL), aggregate."""
    df = LOCAL.rename(columns={v: k for k, v in MAPPED.items()}).rename(columns=str.lower)
    df["sex"] = df["sex"].map(CODES["sex"])
    groups = df.groupby("sex", dropna=False)
    out = pd.DataFrame({"n": groups.size(), "e": groups.ph_ecog.sum(min_count=1), "w": groups.wt_loss.sum(min_count=1)})
    out["ids"] = groups["id"].count()
    return out.sort_index()


def run(con: object) -> pd.DataFrame:
    result = con.execute(QUERY).fetchnumpy()  # type: ignore[attr-defined]
    frame = pd.DataFrame({k: np.ma.filled(np.ma.asarray(v).astype(float), np.nan) for k, v in result.items()})
    return frame.set_index("sex").sort_index()


def source(path: Path | None, fmt: str, url: str | None = None, table: str | None = None) -> TableSource:
    return TableSource("lung", path, fmt, url, table, MAPPED, CODES)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "duckdb"])
def test_duckdb_view_renames_and_recodes_like_pandas(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"lung.{fmt}"
    table = None
    if fmt == "csv":
        LOCAL.to_csv(path, index=False)
    elif fmt == "parquet":
        with duckdb.connect() as con:
            con.register("incoming", LOCAL)
            con.execute(f"COPY incoming TO '{path}' (FORMAT parquet)")
    else:
        table = 'clinic."Lung Data"'
        with duckdb.connect(str(path)) as con:
            con.register("incoming", LOCAL)
            con.execute('CREATE SCHEMA clinic; CREATE TABLE clinic."Lung Data" AS SELECT * FROM incoming')
    con = open_files({"lung": source(path, fmt, table=table)})
    assert set(con.columns()["lung"]) == {"id", "ph_ecog", "sex", "wt_loss"}
    pd.testing.assert_frame_equal(run(con), reference(), check_dtype=False, check_names=False)
    con.close()


def test_postgres_subquery_renames_and_recodes_like_pandas(postgres: PostgresServer) -> None:
    types = {"Patient ID": "bigint", "ph.ecog": "double precision", "Sex": "text", "wt.loss": "double precision"}
    rows = [[None if pd.isna(v) else v for v in row] for row in LOCAL.itertuples(False)]
    postgres.load(("public", "Mapped Lung"), types, rows)
    con = open_server({"lung": source(None, "postgresql", postgres.url(), 'public."Mapped Lung"')})
    assert set(con.columns()["lung"]) == {"id", "ph_ecog", "sex", "wt_loss"}
    pd.testing.assert_frame_equal(run(con), reference(), check_dtype=False, check_names=False)
    con.close()


def test_a_mapping_to_a_missing_local_column_names_it(tmp_path: Path) -> None:
    path = tmp_path / "lung.csv"
    LOCAL.to_csv(path, index=False)
    bad = TableSource("lung", path, "csv", None, None, {"ph_ecog": "ph_ecog"}, {})
    with pytest.raises(ConfigError, match=r"ph_ecog = 'ph_ecog'; use one of its columns: Patient ID, ph.ecog"):
        open_files({"lung": bad})


def parse(tmp_path: Path, text: str) -> TableSource:
    (tmp_path / "lung.csv").write_text("a\n1\n")
    (tmp_path / "agent.toml").write_text(text)
    root = read_toml(tmp_path / "agent.toml")
    return _table(root.section("tables").section("lung"), "lung")


def test_agent_toml_mapping_sections(tmp_path: Path) -> None:
    t = parse(
        tmp_path,
        '[tables.lung]\nsource = "postgresql://r@h/db"\ntable = \'public."Lung"\'\n'
        '[tables.lung.columns]\nPH_ECOG = "ph.ecog"\n[tables.lung.values.sex]\n"1" = "M"\n"2" = "F"\n',
    )
    assert (t.path, t.format, t.local_table) == (None, "postgresql", 'public."Lung"')
    assert dict(t.columns) == {"ph_ecog": "ph.ecog"} and dict(t.values["sex"]) == {"1": "M", "2": "F"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('path = "lung.csv"\nsource = "postgresql://h/db"', "exactly one of path"),
        ('source = "mysql://h/db"', "must be a postgresql:// URL"),
        ('path = "lung.csv"\ntable = "x"', "names a table inside a database"),
        ('path = "lung.csv"\n[tables.lung.columns]\na = "x"\nb = "x"', "already mapped"),
        ('path = "lung.csv"\n[tables.lung.values.sex]\n"1" = "M"\n"2" = 2', "one type"),
    ],
)
def test_agent_toml_mapping_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse(tmp_path, "[tables.lung]\n" + text + "\n")
    assert "agent.toml: tables.lung" in str(err.value)


def test_one_site_with_tables_in_two_engines_routes_each_query(tmp_path: Path, postgres: PostgresServer) -> None:
    path = tmp_path / "labs.csv"
    pd.DataFrame({"pid": [1, 2, 3], "hba1c": [5.0, 6.5, 7.0]}).to_csv(path, index=False)
    rows = [(1, "icu"), (2, "onco"), (3, "icu"), (4, "icu")]
    postgres.load("ward_visits", {"pid": "bigint", "ward": "text"}, rows)
    con = open_sources(
        {
            "labs": TableSource("labs", path, "csv"),
            "visits": TableSource("visits", None, "postgresql", postgres.url(), "ward_visits"),
        }
    )
    try:
        assert set(con.columns()) == {"labs", "visits"}
        assert con.execute("SELECT COUNT(*) AS n FROM visits WHERE ward = 'icu'").fetchnumpy()["n"].tolist() == [3]
        assert con.cursor().execute("SELECT SUM(hba1c) AS s FROM labs").fetchnumpy()["s"].tolist() == [18.5]
        with pytest.raises(QueryError, match="different databases"):
            con.execute("SELECT COUNT(*) AS n FROM visits AS v JOIN labs AS l ON v.pid = l.pid")
    finally:
        con.close()
