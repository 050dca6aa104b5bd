"""The example notebooks, executed headless (nbclient) against three real agents on a small demo.

The notebooks are copied into ``TMP/examples`` beside ``TMP/demo-consortium`` (3 x 2,000 patients),
as ``mpc-jupyter demo`` lays them out, and run unchanged. After a notebook's own cells, one
appended cell prints the DataFrames it stored as JSON, and the test compares them with pandas on
the pooled Parquet files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import duckdb
import nbformat
import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import CONSORTIUM_ENV
from mpc_jupyter.demo.consortium import AgentProcesses
from mpc_jupyter.demo.local import CONSORTIUM_FOLDER, DemoConsortium, DemoSettings, prepare_demo
from mpc_jupyter.demo.notebooks import run_notebook, text_outputs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PATIENTS = 2_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoConsortium]:
    root = tmp_path_factory.mktemp("demo")
    consortium = prepare_demo(root / CONSORTIUM_FOLDER, DemoSettings(PATIENTS), say=lambda _: None)
    shutil.copytree(EXAMPLES, root / "examples", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    with pytest.MonkeyPatch.context() as env, AgentProcesses(consortium.folder, consortium.settings.sites):
        env.setenv(CONSORTIUM_ENV, str(consortium.path))  # as the demo does; the kernels inherit it
        yield consortium


def pooled(demo: DemoConsortium, table: str) -> pd.DataFrame:
    files = ", ".join(f"'{p}'" for p in demo.data_files(table))
    return duckdb.sql(f"SELECT * FROM read_parquet([{files}])").df()


def execute(demo: DemoConsortium, name: str, *frames: str) -> tuple[Any, dict[str, pd.DataFrame]]:
    """Run the notebook copy with a last cell that dumps ``frames``; (executed notebook, frames)."""
    path = demo.folder.parent / "examples" / name
    nb = nbformat.read(path, as_version=4)
    items = ", ".join(f"{f!r}: {f}.to_json(orient='split')" for f in frames)
    dump = f"import json as _j\nprint(_j.dumps({{{items}}}))"
    nb.cells.append(nbformat.v4.new_code_cell(dump))
    nbformat.write(nb, path)
    executed = run_notebook(path, timeout=120)
    last = executed.cells[-1].outputs[-1].text
    stored = {k: pd.read_json(StringIO(v), orient="split", dtype=False) for k, v in json.loads(last).items()}
    return executed, stored


def test_stored_without_outputs() -> None:
    for path in EXAMPLES.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_quickstart(demo: DemoConsortium) -> None:
    executed, frames = execute(demo, "quickstart.ipynb", "by_ward", "rare")
    admissions = pooled(demo, "admissions")
    want = admissions.groupby("ward").length_of_stay.agg(["size", "mean", "std", "median"])
    got = frames["by_ward"].set_index("ward").loc[want.index]
    assert got.admissions.astype(int).tolist() == want["size"].tolist()
    assert np.allclose(got.mean_los.astype(float), want["mean"], rtol=1e-6)
    assert np.allclose(got.sd_los.astype(float), want["std"], rtol=1e-5)
    assert got.median_los.astype(float).tolist() == want["median"].tolist()
    rare = frames["rare"]
    g61 = rare[rare.diagnosis.str.startswith("G61")]
    assert "<5" in g61.admissions.tolist()  # one age group below the minimum cell size
    shown = "\n".join(text for _, text in text_outputs(executed))
    assert "<5" in shown and "connected to" in shown
    kinds = {k for cell in executed.cells for out in cell.get("outputs", []) for k in out.get("data", {})}
    assert "image/png" in kinds  # the chart
    explain = next(c for c in executed.cells if c.source.startswith("%%mpc --explain"))
    assert "reveal" in json.dumps(explain.outputs).lower()


def test_cohort_exploration(demo: DemoConsortium) -> None:
    executed, frames = execute(demo, "cohort-exploration.ipynb", "explorer.result", "by_age_sex", "by_region")
    patients = pooled(demo, "patients")
    explorer = frames["explorer.result"].set_index(["sex", "smoker"])
    want = patients.groupby(["sex", "smoker"]).bmi.agg(["size", "mean"])
    assert explorer.n.astype(int).tolist() == want["size"].tolist()
    assert np.allclose(explorer.avg_bmi.astype(float), want["mean"], rtol=1e-6)
    views = [o for c in executed.cells for o in c.get("outputs", []) if "data" in o]
    assert sum("application/vnd.jupyter.widget-view+json" in o["data"] for o in views) >= 2
    by_region = frames["by_region"].set_index("region")
    counts = patients.region.value_counts()
    assert all(by_region.loc[r, "patients"] == n for r, n in counts.items())
    assert (by_region.patients == "<5").sum() == len(by_region) - len(counts)  # other catchments' districts
    bands = pd.cut(patients.age, [0, 39, 64, 79, 200], labels=["18-39", "40-64", "65-79", "80+"])
    want_bands = patients.groupby([bands, patients.sex], observed=True).size()
    got_bands = frames["by_age_sex"].set_index(["age_band", "sex"]).patients
    assert [int(got_bands[i]) for i in want_bands.index] == want_bands.tolist()


def test_quality_measures(demo: DemoConsortium) -> None:
    _, frames = execute(demo, "quality-measures.ipynb", "by_year", "by_site_period", "by_ward")
    admissions = pooled(demo, "admissions")
    year = admissions.period.str[:4]
    want = admissions.groupby(year).readmitted_30d.mean()
    got = frames["by_year"].set_index("year")
    got.index = got.index.astype(str)
    assert np.allclose(got.loc[want.index, "readmission_30d"].astype(float), want, rtol=1e-6)
    assert (got.readmission_30d_ci_low.astype(float) < got.readmission_30d.astype(float)).all()
    site = admissions.admission_id.str.split("-").str[0]
    recent = admissions.period >= "2021"
    want_site = admissions[recent].groupby(site[recent]).adverse_event.mean()
    got_site = frames["by_site_period"]
    got_site = got_site[got_site.from_2021.astype(bool)].set_index("hospital")
    assert np.allclose(got_site.loc[want_site.index, "adverse_event"].astype(float), want_site, rtol=1e-6)
