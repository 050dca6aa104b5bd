"""Synthetic hospital data of the demo: determinism, shapes, ranges, derived flags, Parquet, survival truth."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from mpc_jupyter.demo.data import (
    DEFAULT_SITES,
    RARE_CODES,
    STUDY_END,
    STUDY_START,
    TABLE_SCHEMAS,
    TRUTH,
    WARDS,
    generate_site,
    identifier_columns,
    site_profile,
    write_consortium_data,
)

SEED = 11
PATIENTS = 20_000  # per site: enough for the Cox fit and site differences, fast to generate
END = pd.Timestamp(STUDY_END)
START = pd.Timestamp(STUDY_START)


@pytest.fixture(scope="module")
def sites() -> dict[str, dict[str, pd.DataFrame]]:
    return {name: generate_site(name, PATIENTS, SEED) for name in DEFAULT_SITES}


@pytest.fixture(scope="module")
def pooled(sites: dict[str, dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    return {table: pd.concat([tables[table] for tables in sites.values()]) for table in TABLE_SCHEMAS}


def test_same_seed_same_data_and_sites_differ() -> None:
    first, again = generate_site("north", 1500, 3), generate_site("north", 1500, 3)
    for table in TABLE_SCHEMAS:
        pd.testing.assert_frame_equal(first[table], again[table])
    assert not first["patients"]["age"].equals(generate_site("north", 1500, 4)["patients"]["age"])
    assert not first["patients"]["age"].equals(generate_site("south", 1500, 3)["patients"]["age"])


def test_columns_follow_the_schemas(sites: dict[str, dict[str, pd.DataFrame]]) -> None:
    for tables in sites.values():
        assert list(tables) == list(TABLE_SCHEMAS)
        for table, frame in tables.items():
            assert list(frame.columns) == list(TABLE_SCHEMAS[table])
    assert identifier_columns("admissions") == ["admission_id", "patient_id"]
    assert all(identifier_columns(table) == ["patient_id"] for table in ("patients", "diagnoses", "labs", "survival"))


def test_sizes_and_keys(sites: dict[str, dict[str, pd.DataFrame]]) -> None:
    for name, t in sites.items():
        patients = t["patients"]
        assert len(patients) == PATIENTS and patients["patient_id"].is_unique
        assert patients["patient_id"].str.startswith(f"{name}-").all()
        assert t["admissions"]["admission_id"].is_unique
        assert 0.5 < len(t["admissions"]) / PATIENTS < 2.0
        assert len(t["diagnoses"]) > 2 * PATIENTS and len(t["labs"]) > 3 * PATIENTS
        for table in ("admissions", "diagnoses", "labs", "survival"):
            assert t[table]["patient_id"].isin(patients["patient_id"]).all()
        assert t["survival"]["patient_id"].is_unique


def test_patient_values(pooled: dict[str, pd.DataFrame]) -> None:
    p = pooled["patients"]
    assert set(p["sex"]) == {"F", "M"}
    assert p["age"].between(18, 100).all()
    assert (p["index_date"].dt.year - p["birth_year"] - p["age"]).isin([0, 1]).all()
    assert p["bmi"].between(15, 65).all() and 26 < p["bmi"].mean() < 29
    assert p["index_date"].between(START, pd.Timestamp("2020-12-31")).all()
    for flag, low, high in (("smoker", 0.1, 0.3), ("diabetes", 0.07, 0.2), ("hypertension", 0.25, 0.5)):
        assert p[flag].dtype == bool and low < p[flag].mean() < high


def test_admission_values(sites: dict[str, dict[str, pd.DataFrame]]) -> None:
    for t in sites.values():
        a = t["admissions"].merge(
            t["patients"][["patient_id", "index_date", "age"]], on="patient_id", suffixes=("", "_0")
        )
        assert (a["age"] - a["age_0"]).between(0, 5).all()
        assert (a["index_date"] <= a["admit_date"]).all() and (a["discharge_date"] <= END).all()
        assert ((a["discharge_date"] - a["admit_date"]).dt.days == a["length_of_stay"]).all()
        assert a["length_of_stay"].between(0, 120).all() and 3 < a["length_of_stay"].mean() < 9
        assert set(a["ward"]) <= set(WARDS)
        quarter = a["admit_date"].dt.year.astype(str) + "-Q" + a["admit_date"].dt.quarter.astype(str)
        assert (a["period"] == quarter).all()
        assert 0.03 <= a["adverse_event"].mean() <= 0.08
        assert a.groupby("ward")["adverse_event"].mean().idxmax() == "icu"


def test_readmitted_30d_follows_the_admission_dates(sites: dict[str, dict[str, pd.DataFrame]]) -> None:
    for t in sites.values():
        a = t["admissions"].sort_values(["patient_id", "admit_date"])
        gap = (a.groupby("patient_id")["admit_date"].shift(-1) - a["discharge_date"]).dt.days
        expected = gap.between(0, TRUTH["readmission_window_days"])
        assert (a["readmitted_30d"] == expected).all()
        assert 0.08 <= a["readmitted_30d"].mean() <= 0.20


def test_nobody_is_seen_after_death(sites: dict[str, dict[str, pd.DataFrame]]) -> None:
    for t in sites.values():
        s = t["survival"]
        dead = s[s["event"]].assign(death=lambda d: d["entry_date"] + pd.to_timedelta(d["time_days"], unit="D"))
        assert (dead["death"] <= END).all()
        death = dead.set_index("patient_id")["death"]
        for table, column in (("admissions", "admit_date"), ("diagnoses", "dx_date"), ("labs", "taken_at")):
            rows = t[table][t[table]["patient_id"].isin(death.index)]
            assert (rows[column].dt.normalize() <= rows["patient_id"].map(death)).all()


def test_icd10_codes_are_well_formed(pooled: dict[str, pd.DataFrame]) -> None:
    pattern = re.compile(r"^[A-TV-Z][0-9]{2}$")
    for codes in (pooled["admissions"]["primary_dx"], pooled["diagnoses"]["icd10"]):
        assert codes.map(lambda code: bool(pattern.match(code))).all()


def test_rare_codes_are_small_per_site_but_not_pooled(sites: dict[str, dict[str, pd.DataFrame]]) -> None:
    counts = pd.DataFrame({name: t["admissions"]["primary_dx"].value_counts() for name, t in sites.items()})
    counts = counts.fillna(0).astype(int)
    small_everywhere = counts[(counts < 5).all(axis=1) & (counts.sum(axis=1) >= 5)].index
    assert set(RARE_CODES) <= set(small_everywhere)
    assert (counts.loc[list(RARE_CODES)] >= 1).all().all()
    for code in ("I21", "I50", "J44", "J18", "E11", "N18", "C34", "S72"):
        assert (counts.loc[code] >= 100).all()


def test_labs_are_plausible_and_follow_diagnoses(sites: dict[str, dict[str, pd.DataFrame]]) -> None:
    ranges = {"hba1c": (20, 150), "creatinine": (30, 1200), "ldl": (0.5, 9), "crp": (0.5, 400), "hb": (55, 190)}
    units = {"hba1c": "mmol/mol", "creatinine": "umol/L", "ldl": "mmol/L", "crp": "mg/L", "hb": "g/L"}
    t = sites["south"]
    labs = t["labs"]
    assert set(labs["test"]) == set(ranges)
    for test, (low, high) in ranges.items():
        rows = labs[labs["test"] == test]
        assert rows["value"].between(low, high).all() and (rows["unit"] == units[test]).all()
    diabetic = labs["patient_id"].isin(t["patients"].loc[t["patients"]["diabetes"], "patient_id"])
    hba1c = labs[labs["test"] == "hba1c"].groupby(diabetic)["value"].median()
    assert hba1c[True] > 48 > hba1c[False]
    ckd = labs["patient_id"].isin(t["diagnoses"].loc[t["diagnoses"]["icd10"] == "N18", "patient_id"])
    creatinine = labs[labs["test"] == "creatinine"].groupby(ckd)["value"].median()
    assert creatinine[True] > 1.5 * creatinine[False]


def test_sites_differ_realistically(sites: dict[str, dict[str, pd.DataFrame]]) -> None:
    def mean(site: str, table: str, column: str) -> float:
        return float(sites[site][table][column].mean())

    def share(site: str, code: str) -> float:
        return float((sites[site]["admissions"]["primary_dx"] == code).mean())

    assert mean("central", "patients", "age") + 5 < mean("north", "patients", "age") < mean("south", "patients", "age")
    assert mean("central", "admissions", "readmitted_30d") + 0.03 < mean("south", "admissions", "readmitted_30d")
    assert share("north", "J44") > 1.3 * share("south", "J44")
    assert share("south", "S72") > 1.5 * share("central", "S72")
    regions = {name: set(t["patients"]["region"]) for name, t in sites.items()}
    assert not regions["north"] & regions["south"]


def test_docs_describe_every_column() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "demo-data.md").read_text()
    for table, columns in TABLE_SCHEMAS.items():
        section = docs.split(f"### `{table}`")[1].split("###")[0]
        for column, spec in columns.items():
            assert f"| `{column}` | {spec.sql_type} |" in section, (table, column)


def test_other_site_names_get_their_own_profile() -> None:
    assert site_profile("east") == site_profile("east") != site_profile("west")
    east = generate_site("east", 800, 1)
    assert east["patients"]["region"].str.startswith("EA").all()
    with pytest.raises(ValueError, match="at least 1"):
        generate_site("east", 0, 1)


def test_parquet_files_read_back_in_duckdb(tmp_path: Path) -> None:
    written = write_consortium_data(tmp_path, ["north", "south"], patients=1200, seed=5)
    assert set(written) == {"north", "south"}
    con = duckdb.connect()
    for site, tables in written.items():
        frames = generate_site(site, 1200, 5)
        assert set(tables) == set(TABLE_SCHEMAS)
        for table, path in tables.items():
            assert path == tmp_path / site / f"{table}.parquet" and path.is_file()
            described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
            assert [(row[0], row[1]) for row in described] == [
                (column, spec.sql_type) for column, spec in TABLE_SCHEMAS[table].items()
            ]
            assert con.execute(f"SELECT count(*) FROM '{path}'").fetchone() == (len(frames[table]),)
        (readmitted,) = con.execute(f"SELECT avg(readmitted_30d::INT) FROM '{tables['admissions']}'").fetchone()
        assert readmitted == pytest.approx(frames["admissions"]["readmitted_30d"].mean())


def test_cox_model_on_pooled_survival_recovers_the_hazard_ratios(pooled: dict[str, pd.DataFrame]) -> None:
    s = pooled["survival"]
    assert set(s["cohort"]) == {"lung_cancer", "heart_failure"} and s["stage"].between(1, 4).all()
    assert (s["time_days"] >= 1).all() and 0.2 < s["event"].mean() < 0.7
    data = pd.DataFrame(
        {
            "time": s["time_days"],
            "event": s["event"],
            "age_per_10_years": s["age"] / 10,
            "sex_male": (s["sex"] == "M").astype(float),
            "treatment_new": (s["treatment"] == "new").astype(float),
            "stage_per_level": s["stage"].astype(float),
            "cohort": s["cohort"],
        }
    )
    fit = CoxPHFitter().fit(data, "time", "event", strata=["cohort"])
    for name, beta in TRUTH["log_hazard_ratios"].items():
        assert fit.params_[name] == pytest.approx(beta, abs=0.15), name
        assert np.exp(beta) == pytest.approx(TRUTH["hazard_ratios"][name])
