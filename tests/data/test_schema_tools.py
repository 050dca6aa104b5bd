"""``mpc-consortium schema draft`` and the data-vs-schema step of ``mpc-site-agent check``.

The draft is checked against pandas on the same rows (types, domains, grids covering the
range) and must load as a schema; the check's counts are checked against pandas, and neither
may print a value of a row (the attacker here is whoever reads the check's output or the
draft: a value only one patient has must not appear).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_lung

from mpc_jupyter.demo.consortium import SiteSpec, TableSpec, build_consortium
from site_agent.cli.consortium import main as consortium_cli
from site_agent.cli.schema_draft import rounded_grid
from site_agent.config import TableSource
from site_agent.data import open_files, open_server
from site_agent.data.conformance import conformance
from site_agent.query.catalog import Column, Schema, Table
from site_agent.query.schema_file import load_schema_file

from .pgserver import PostgresServer


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, list[Path]]:
    """R's lung data with a patient id, as two sites' CSV extracts under R's names."""
    folder = tmp_path_factory.mktemp("extracts")
    lung = load_lung()
    lung.insert(0, "patient_id", range(1, len(lung) + 1))
    paths = [folder / "a.csv", folder / "b.csv"]
    lung[lung.inst <= 10].to_csv(paths[0], index=False)
    lung[~(lung.inst <= 10)].to_csv(paths[1], index=False)
    return lung, paths


def draft(*sources: str) -> str:
    from site_agent.cli.schema_draft import draft as make

    return make(list(sources))


def test_draft_proposes_types_domains_grids_and_loads(
    extracts: tuple[pd.DataFrame, list[Path]], tmp_path: Path
) -> None:
    lung, paths = extracts
    out = tmp_path / "schema.toml"
    assert consortium_cli(["schema", "draft", *(f"lung={p}" for p in paths), "--out", str(out)]) == 0
    text = out.read_text()
    table = load_schema_file(out).tables["lung"]
    assert table.columns["sex"].domain == tuple(sorted(lung.sex.unique()))
    assert table.columns["status"].domain == tuple(sorted(lung.status.unique()))
    assert table.columns["ph_ecog"].domain == tuple(sorted(lung["ph.ecog"].dropna().unique()))
    assert table.columns["ph_ecog"].dtype == "integer"  # 0.0, 1.0, ... in the file
    for name, local in (("age", "age"), ("time", "time"), ("wt_loss", "wt.loss"), ("meal_cal", "meal.cal")):
        lo, hi, step = table.columns[name].grid or (math.nan, math.nan, math.nan)
        assert lo <= lung[local].min() and hi >= lung[local].max() and step > 0, name
        assert (hi - lo) / step <= 1000
    assert "REVIEW privacy unit: 'patient_id'" in text and "unique per row here" in text
    assert 'ph_ecog = "ph.ecog"' in text  # the agent.toml mapping line for the local name
    assert text.count("# REVIEW domain") == sum(c.domain is not None for c in table.columns.values())
    # no site's exact extreme of a continuous column (one patient's value) is printed
    for local in ("time", "wt.loss", "meal.cal"):
        for value in (lung[local].min(), lung[local].max()):
            assert f"{value:g}" not in text.replace("[", " ").replace("]", " ").split(), (local, value)


def test_draft_refuses_to_overwrite(extracts: tuple[pd.DataFrame, list[Path]], tmp_path: Path) -> None:
    out = tmp_path / "schema.toml"
    out.write_text("kept")
    assert consortium_cli(["schema", "draft", str(extracts[1][0]), "--out", str(out)]) == 1
    assert out.read_text() == "kept"


def test_draft_from_postgresql_equals_draft_from_the_same_rows_in_a_file(
    extracts: tuple[pd.DataFrame, list[Path]], postgres: PostgresServer
) -> None:
    paths = extracts[1]
    part = pd.read_csv(paths[0])
    types = {c: "bigint" if c == "patient_id" else "double precision" for c in part.columns}
    types.update({"age": "integer", "sex": "integer", "status": "integer", "time": "integer"})
    rows = [[None if pd.isna(v) else v for v in row] for row in part.itertuples(False)]
    postgres.load(("public", "R lung"), types, rows)
    from_pg = draft(f'lung={postgres.url()}#public."R lung"').splitlines()[3:]
    from_file = draft(f"lung={paths[0]}").splitlines()[3:]
    strip = [line.replace(str(paths[0]), "SOURCE") for line in from_file]
    assert [line.split(" in ")[0] for line in from_pg] == [line.split(" in ")[0] for line in strip]


SCHEMA = Schema.of(
    [
        Table.of(
            "visits",
            [
                Column("pid", "integer"),
                Column("sex", "text", ("F", "M")),
                Column("ward", "text", ("icu", "onco", None)),
                Column("age", "integer", None, (0, 100, 1)),
                Column("stage", "integer", (1, 2, 3)),
                Column("bmi", "float"),
            ],
        )
    ]
)
VISITS = pd.DataFrame(
    {
        "pid": [1, 2, 3, 4, 5, 6, 7],
        "sex": ["F", "M", "ZEBRA-7731", "F", None, "x", "M"],  # 2 outside the domain, 1 NULL
        "ward": ["icu", None, "onco", "icu", "ward-Q9", None, "onco"],  # NULL is a group; 1 outside
        "age": [34, 101, 55, -2, 40, 40, 88],  # 2 outside the grid
        "stage": [1.0, 2.0, 2.5, 3.0, None, 1.0, 2.0],  # 1 non-whole
    }
)  # no bmi column at all


def expected_findings() -> dict[str, list[str]]:
    v = VISITS
    return {
        "sex": [f"{(~v.sex.isin(['F', 'M']) & v.sex.notna()).sum()} values outside the domain",
                f"{v.sex.isna().sum()} NULLs, not in the domain"],
        "ward": [f"{(~v.ward.isin(['icu', 'onco']) & v.ward.notna()).sum()} values outside the domain",
                 f"{v.ward.isna().sum()} NULLs (a group of their own)"],
        "age": [f"{((v.age < 0) | (v.age > 100)).sum()} values outside the grid"],
        "stage": [f"{(v.stage.notna() & (v.stage != np.floor(v.stage))).sum()} values are not whole numbers",
                  f"{v.stage.isna().sum()} NULLs, not in the domain"],
        "bmi": ["missing"],
    }  # fmt: skip


def check_findings(con: object) -> None:
    findings = conformance(con, SCHEMA, ["visits"])  # type: ignore[arg-type]
    by_column: dict[str, list[str]] = {}
    for f in findings:
        by_column.setdefault(f.column, []).append(f.problem)
    for column, starts in expected_findings().items():
        got = by_column.get(column, [])
        for start in starts:
            assert any(p.startswith(start) for p in got), (column, start, got)
    text = "\n".join(map(str, findings))
    for value in ("ZEBRA-7731", "ward-Q9", "101", "2.5", "x"):
        assert value not in text.replace("lung.", "").split(), value  # counts only, never a value


def test_check_counts_disagreements_in_duckdb(tmp_path: Path) -> None:
    path = tmp_path / "visits.csv"
    VISITS.to_csv(path, index=False)
    con = open_files({"visits": TableSource("visits", path, "csv")})
    try:
        check_findings(con)
    finally:
        con.close()


def test_check_counts_disagreements_in_postgresql(postgres: PostgresServer) -> None:
    types = {"pid": "bigint", "sex": "text", "ward": "text", "age": "integer", "stage": "double precision"}
    rows = [[None if pd.isna(v) else v for v in row] for row in VISITS.itertuples(False)]
    postgres.load("visits", types, rows)
    con = open_server({"visits": TableSource("visits", None, "postgresql", postgres.url(), "visits")})
    try:
        check_findings(con)
    finally:
        con.close()


def test_rounded_grid_covers_the_range_without_its_ends() -> None:
    assert rounded_grid(31.0, 87.0, True) == (30.0, 90.0, 1.0)
    assert rounded_grid(-24.0, 68.0, False) == (-30.0, 70.0, 0.1)
    assert rounded_grid(96.0, 2600.0, True) == (0.0, 3000.0, 10.0)


def test_serve_with_a_broken_config_prints_one_line_naming_file_and_key(tmp_path: Path) -> None:
    data = tmp_path / "lung.csv"
    data.write_text("id,age\n1,50\n")
    sites = [SiteSpec(s, {"lung": TableSpec(data)}) for s in ("a", "b", "c")]
    config = build_consortium(tmp_path / "c", sites, '[tables.lung]\nid = "integer"\nage = "integer"\n')
    agent_toml = config.parent / "sites" / "a" / "agent.toml"
    head, section, tail = agent_toml.read_text().rpartition("\n[tables.lung]\n")
    agent_toml.write_text(head + section + "sauce = 1\n" + tail)
    done = subprocess.run(
        [sys.executable, "-m", "site_agent.cli.agent", "serve", "--config", str(agent_toml)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{agent_toml}: tables.lung.sauce: unknown key (allowed here: path" in lines[0]
