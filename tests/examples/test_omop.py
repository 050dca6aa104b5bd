"""The OMOP CDM preset and demo: the schema loads, the data are seeded, and
``examples/omop-incidence.ipynb`` runs headless against three real agents on OMOP data
(3 x 3,000 persons), giving what pandas gives on the pooled Parquet files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import CONSORTIUM_ENV
from mpc_jupyter.demo.consortium import AgentProcesses
from mpc_jupyter.demo.local import OMOP_FOLDER, DemoConsortium, DemoSettings, prepare_demo, read_marker
from mpc_jupyter.demo.omop import OMOP_TABLES, T2DM_CONCEPTS, generate_omop_site, omop_schema_toml
from site_agent.query.schema_file import load_schema_file

from .test_notebooks import EXAMPLES, execute, pooled

PERSONS = 3_000
Z = 1.959964


@pytest.fixture(scope="module")
def omop_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoConsortium]:
    root = tmp_path_factory.mktemp("omop")
    consortium = prepare_demo(root / OMOP_FOLDER, DemoSettings(PERSONS, omop=True), say=lambda _: None)
    shutil.copytree(EXAMPLES, root / "examples", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    with pytest.MonkeyPatch.context() as env, AgentProcesses(consortium.folder, consortium.settings.sites):
        env.setenv(CONSORTIUM_ENV, str(consortium.path))
        yield consortium


def test_preset_loads(tmp_path: Path) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(omop_schema_toml())
    schema = load_schema_file(path)
    for table in (
        "person",
        "observation_period",
        "visit_occurrence",
        "condition_occurrence",
        "drug_exposure",
        "measurement",
        "death",
    ):
        assert schema.tables[table].columns["person_id"].person
    assert schema.tables["person"].columns["gender_concept_id"].domain == (8507, 8532)
    assert set(T2DM_CONCEPTS) <= set(schema.tables["condition_occurrence"].columns["condition_concept_id"].domain or ())
    assert schema.tables["observation_period"].columns["person_years"].expr is not None


def test_sites_seeded_and_different() -> None:
    a, b = generate_omop_site("north", 1, 500, seed=7), generate_omop_site("north", 1, 500, seed=7)
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table])
    other = generate_omop_site("south", 2, 500, seed=7)
    assert set(a["person"].person_id).isdisjoint(other["person"].person_id)
    assert a["person"].year_of_birth.mean() != other["person"].year_of_birth.mean()


def _reference(demo: DemoConsortium) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pandas on the pooled rows: (observation periods with sex, age band and person-years; cases' person ids)."""
    person, op, co = (pooled(demo, t) for t in ("person", "observation_period", "condition_occurrence"))
    start, end = (pd.to_datetime(op[c]) for c in ("observation_period_start_date", "observation_period_end_date"))
    op["person_years"] = ((end - start).dt.days + 1) / 365.25
    op = op.merge(person, on="person_id")
    age = start.dt.year.to_numpy() - op.year_of_birth
    op["age_band"] = pd.cut(age, [-1000, 39, 59, 74, 1000], labels=["18-39", "40-59", "60-74", "75+"]).astype(str)
    op["sex"] = np.where(op.gender_concept_id == 8507, "male", "female")
    co = co[co.condition_concept_id.isin(T2DM_CONCEPTS)].merge(op, on="person_id")
    day = pd.to_datetime(co.condition_start_date)
    inside = (day >= pd.to_datetime(co.observation_period_start_date)) & (
        day <= pd.to_datetime(co.observation_period_end_date)
    )
    return op, co[inside].drop_duplicates("person_id")


def test_omop_incidence_notebook(omop_demo: DemoConsortium) -> None:
    _, frames = execute(omop_demo, "omop-incidence.ipynb", "person_time", "cases", "incidence", "by_site", "mortality")
    op, cases = _reference(omop_demo)
    keys = ["sex", "age_band"]
    want = op.groupby(keys).agg(persons=("person_id", "size"), person_years=("person_years", "sum"))
    want["cases"] = cases.groupby(keys).size()
    want["per_1000_py"] = 1000 * want.cases / want.person_years
    e = want.cases
    want["ci_low"] = 1000 * e * (1 - 1 / (9 * e) - Z / (3 * np.sqrt(e))) ** 3 / want.person_years
    want["ci_high"] = 1000 * (e + 1) * (1 - 1 / (9 * (e + 1)) + Z / (3 * np.sqrt(e + 1))) ** 3 / want.person_years
    got = frames["incidence"].set_index(keys).loc[want.index]
    assert len(want) == 8 and (want.cases >= 5).all()  # every cell released
    assert got.persons.astype(int).tolist() == want.persons.tolist()
    assert got.cases.astype(int).tolist() == want.cases.tolist()
    records = pooled(omop_demo, "condition_occurrence")
    diabetes = records[records.condition_concept_id.isin([*T2DM_CONCEPTS, 201820, 201254])].person_id.nunique()
    assert diabetes > len(cases)  # a query without the concept set would not match
    assert np.allclose(got.person_years.astype(float), want.person_years, rtol=1e-6)
    assert np.allclose(got.per_1000_py.astype(float), want.per_1000_py, rtol=1e-6)
    assert np.allclose(got.ci_low.astype(float), want.ci_low, rtol=1e-6)
    assert np.allclose(got.ci_high.astype(float), want.ci_high, rtol=1e-6)
    site = op.person_id // 10**7
    names = dict(enumerate(omop_demo.settings.sites, start=1))
    want_site = (
        cases.groupby((cases.person_id // 10**7).map(names)).size() / op.groupby(site.map(names)).person_years.sum()
    )
    got_site = frames["by_site"].set_index("hospital").per_1000_py.astype(float)
    assert np.allclose(got_site.loc[want_site.index], 1000 * want_site, rtol=1e-6)
    assert got_site.max() > 1.3 * got_site.min()  # the sites differ
    op["died"] = op.person_id.isin(pooled(omop_demo, "death").person_id)
    dead = op.groupby(keys).agg(e=("died", "sum"), py=("person_years", "sum"))
    byar = dead.e * (1 - 1 / (9 * dead.e) - Z / (3 * np.sqrt(dead.e))) ** 3
    mortality = frames["mortality"].set_index(keys).loc[dead.index]
    rate = pd.to_numeric(mortality.per_1000_py, errors="coerce")
    small = (dead.e >= 1) & (dead.e < 5)  # 1 to 4 deaths: the release rule withholds the cell
    assert small.any() and (rate.isna() == small).all()
    shown = ~small
    assert np.allclose(rate[shown], 1000 * dead.e[shown] / dead.py[shown], rtol=1e-6)
    assert np.allclose(mortality.ci_low[shown].astype(float), 1000 * byar[shown] / dead.py[shown], rtol=1e-5)


def test_marker_records_omop(omop_demo: DemoConsortium) -> None:
    assert read_marker(omop_demo.folder) == (DemoSettings(PERSONS, omop=True), True)


def test_domains_cover_every_generated_value() -> None:
    tables = generate_omop_site("central", 2, 2_000)
    for table, frame in tables.items():
        assert list(frame.columns) == list(OMOP_TABLES[table])
        for column, (_, domain, grid) in OMOP_TABLES[table].items():
            values = frame[column].dropna()
            if domain is not None:
                assert set(values.tolist()) <= set(domain), (table, column)
            if grid is not None and len(values):
                assert grid[0] <= values.min() and values.max() <= grid[1], (table, column)
