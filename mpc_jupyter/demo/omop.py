"""OMOP CDM v5.4: a schema preset for the core clinical tables, and seeded synthetic OMOP sites.

**The preset** (``omop_schema_toml``) declares the core tables of the OHDSI common data model,
v5.4 (https://ohdsi.github.io/CommonDataModel/cdm54.html): ``person``, ``observation_period``,
``visit_occurrence``, ``condition_occurrence``, ``drug_exposure``, ``measurement`` and ``death``,
with their principal columns and OMOP's types. ``person_id`` is the privacy unit of every
table (``person = true``), so cell sizes count persons and joins follow ``person_id`` only; the
tables' own ``*_id`` keys are identifiers in the demo policies. Public domains: sex
(``gender_concept_id``: 8507 male, 8532 female), race, ethnicity, the type and visit concepts,
and the concept ids the synthetic data use; grids for ``year_of_birth`` and values. One
derived column, ``observation_period.person_years``, is the length of the period in years
(inclusive of both ends, as OMOP's dates are): the query language allows no product or
difference of two columns inside an aggregate, so person-time is declared once here. A death
indicator is a condition, which a derived column may not hold (the release rule must see the
persons on both sides of it), so mortality is written in the query:
``RATE(CASE WHEN d.death_date IS NULL THEN 0 ELSE 1 END, op.person_years, 1000)`` through
``observation_period LEFT JOIN death``.

**Concept ids** are standard concepts of the OHDSI vocabularies (https://athena.ohdsi.org),
SNOMED conditions, RxNorm ingredients and LOINC measurements. ``T2DM_CONCEPTS`` is a small
concept set for type 2 diabetes, the kind an OHDSI cohort definition lists: 201826 Type 2
diabetes mellitus, 4193704 Type 2 diabetes mellitus without complication, 443732 Disorder due
to type 2 diabetes mellitus, 443238 Diabetic - poor control (as in the OHDSI phenotype
library's T2DM definitions). The other conditions are deliberately *outside* the set, among
them 201820 Diabetes mellitus (the parent, unspecified type) and 201254 Type 1 diabetes mellitus,
so a query that forgets the concept set gets a different answer.

**The synthetic sites** (``generate_omop_site``): a few thousand persons each, one observation
period per person (entry 2016-2018, end at death, loss to follow-up or 2023-12-31), incident
type 2 diabetes with a hazard rising with age, higher in men and different per site
(``OMOP_SITE_RATES``), later visits with the same concepts, metformin and HbA1c after
diagnosis, background conditions, and deaths. Everything is vectorized numpy under one seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import duckdb
import numpy as np
import pandas as pd

from site_agent.tomlfile import toml_key, toml_str

from .data import DEFAULT_SEED, DEFAULT_SITES, _dates, _day_between

Array = np.ndarray

OMOP_PERSONS = 3_000

MALE, FEMALE = 8507, 8532
EHR = 32817  # type concept "EHR", v5.4's type concept for every record here
INPATIENT, OUTPATIENT, EMERGENCY = 9201, 9202, 9203
RACES = (8527, 8516, 8515, 0)  # White, Black or African American, Asian, no matching concept
ETHNICITIES = (38003564, 38003563)  # Not Hispanic or Latino, Hispanic or Latino
T2DM_CONCEPTS: tuple[int, ...] = (201826, 4193704, 443732, 443238)
"""The demo's type 2 diabetes concept set (see the module docstring)."""
_T2DM_FIRST = (0.70, 0.15, 0.10, 0.05)  # the concept recorded at diagnosis
OTHER_CONDITIONS: Mapping[int, float] = MappingProxyType(
    {  # concept id -> records per person-year; none of these is in T2DM_CONCEPTS
        320128: 0.08,  # Essential hypertension
        201820: 0.02,  # Diabetes mellitus (unspecified type: the concept set's parent, not in it)
        201254: 0.004,  # Type 1 diabetes mellitus
        255573: 0.02,  # Chronic obstructive lung disease
        4329847: 0.006,  # Myocardial infarction
        257012: 0.05,  # Chronic sinusitis
    }
)
METFORMIN = 1503297  # RxNorm ingredient metformin
ATORVASTATIN = 1545958  # RxNorm ingredient atorvastatin
HBA1C = 3004410  # LOINC 4548-4 Hemoglobin A1c/Hemoglobin.total in Blood
PERCENT = 8554  # UCUM "%"

OBSERVATION_START = np.datetime64("2016-01-01", "D")
OBSERVATION_END = np.datetime64("2023-12-31", "D")
_START = int(OBSERVATION_START.astype(np.int64))
_END = int(OBSERVATION_END.astype(np.int64))
_ENTRY_SPAN = 3 * 365


@dataclass(frozen=True)
class OmopSiteRates:
    """What makes a synthetic OMOP site differ: ages, type 2 diabetes incidence and mortality."""

    mean_age: float  # at entry
    t2dm_per_1000py: float  # incidence at age 50 in women; x exp(0.035 per year) and x 1.4 for men
    deaths_per_1000py: float  # at age 70 in women; x exp(0.08 per year) and x 1.3 for men
    loss_per_year: float  # loss to follow-up (moving away)


OMOP_SITE_RATES: Mapping[str, OmopSiteRates] = MappingProxyType(
    {
        "north": OmopSiteRates(mean_age=54, t2dm_per_1000py=9.0, deaths_per_1000py=28, loss_per_year=0.05),
        "central": OmopSiteRates(mean_age=45, t2dm_per_1000py=6.0, deaths_per_1000py=22, loss_per_year=0.10),
        "south": OmopSiteRates(mean_age=62, t2dm_per_1000py=12.0, deaths_per_1000py=32, loss_per_year=0.04),
    }
)


def site_rates(name: str) -> OmopSiteRates:
    """The site's rates; a name without its own gets rates derived from the name."""
    if name in OMOP_SITE_RATES:
        return OMOP_SITE_RATES[name]
    u = np.random.default_rng(zlib.crc32(name.encode())).random(3)
    return OmopSiteRates(45 + 15 * u[0], 5 + 8 * u[1], 20 + 12 * u[2], 0.06)


# --------------------------------------------------------------------------- the preset

# table -> column -> (type, domain or None, grid or None); person_id is the person column
_ID, _INT, _DATE, _FLOAT, _TEXT = "integer", "integer", "date", "float", "text"
_Spec = tuple[str, Sequence[int] | None, tuple[float, float, float] | None]

VISIT_CONCEPTS = (INPATIENT, OUTPATIENT, EMERGENCY)
CONDITION_CONCEPTS: tuple[int, ...] = (*T2DM_CONCEPTS, *OTHER_CONDITIONS)
DRUG_CONCEPTS = (METFORMIN, ATORVASTATIN)
MEASUREMENT_CONCEPTS = (HBA1C,)

OMOP_TABLES: Mapping[str, Mapping[str, _Spec]] = MappingProxyType(
    {
        "person": {
            "person_id": (_ID, None, None),
            "gender_concept_id": (_INT, (MALE, FEMALE), None),
            "year_of_birth": (_INT, None, (1900, 2025, 1)),
            "month_of_birth": (_INT, tuple(range(1, 13)), None),
            "day_of_birth": (_INT, None, None),
            "race_concept_id": (_INT, RACES, None),
            "ethnicity_concept_id": (_INT, ETHNICITIES, None),
        },
        "observation_period": {
            "observation_period_id": (_ID, None, None),
            "person_id": (_ID, None, None),
            "observation_period_start_date": (_DATE, None, None),
            "observation_period_end_date": (_DATE, None, None),
            "period_type_concept_id": (_INT, (EHR,), None),
        },
        "visit_occurrence": {
            "visit_occurrence_id": (_ID, None, None),
            "person_id": (_ID, None, None),
            "visit_concept_id": (_INT, VISIT_CONCEPTS, None),
            "visit_start_date": (_DATE, None, None),
            "visit_end_date": (_DATE, None, None),
            "visit_type_concept_id": (_INT, (EHR,), None),
        },
        "condition_occurrence": {
            "condition_occurrence_id": (_ID, None, None),
            "person_id": (_ID, None, None),
            "condition_concept_id": (_INT, CONDITION_CONCEPTS, None),
            "condition_start_date": (_DATE, None, None),
            "condition_end_date": (_DATE, None, None),
            "condition_type_concept_id": (_INT, (EHR,), None),
            "visit_occurrence_id": (_ID, None, None),
        },
        "drug_exposure": {
            "drug_exposure_id": (_ID, None, None),
            "person_id": (_ID, None, None),
            "drug_concept_id": (_INT, DRUG_CONCEPTS, None),
            "drug_exposure_start_date": (_DATE, None, None),
            "drug_exposure_end_date": (_DATE, None, None),
            "drug_type_concept_id": (_INT, (EHR,), None),
            "quantity": (_FLOAT, None, (0, 1000, 1)),
            "days_supply": (_INT, None, (0, 365, 1)),
            "visit_occurrence_id": (_ID, None, None),
        },
        "measurement": {
            "measurement_id": (_ID, None, None),
            "person_id": (_ID, None, None),
            "measurement_concept_id": (_INT, MEASUREMENT_CONCEPTS, None),
            "measurement_date": (_DATE, None, None),
            "measurement_type_concept_id": (_INT, (EHR,), None),
            "value_as_number": (_FLOAT, None, (0, 1000, 0.1)),
            "unit_concept_id": (_INT, (PERCENT,), None),
            "visit_occurrence_id": (_ID, None, None),
        },
        "death": {
            "person_id": (_ID, None, None),
            "death_date": (_DATE, None, None),
            "death_type_concept_id": (_INT, (EHR,), None),
            "cause_concept_id": (_INT, None, None),
        },
    }
)
"""The preset's tables: each column's type, public domain and quantile grid (OMOP v5.4 names)."""

PERSON = "person_id"
PERSON_YEARS = "(date_diff('day', observation_period_start_date, observation_period_end_date) + 1) / 365.25"
"""``observation_period.person_years``: days in the period, both ends included, in years."""
_SQL_TYPES = {"integer": "BIGINT", "float": "DOUBLE", "date": "DATE", "text": "VARCHAR"}


def identifier_columns(table: str) -> list[str]:
    """The record keys of ``table`` (``*_id`` columns that are not concepts): policy identifiers."""
    return [c for c in OMOP_TABLES[table] if c.endswith("_id") and not c.endswith("concept_id")]


def omop_schema_toml() -> str:
    """The text of a ``schema.toml`` for the core OMOP CDM v5.4 tables (see the module docstring)."""
    lines = [
        "# OMOP CDM v5.4 core tables (public): types, GROUP BY domains (concept ids), quantile grids.",
        "# person_id is every table's privacy unit: cells count persons, joins follow person_id.",
    ]
    for table, columns in OMOP_TABLES.items():
        lines += ["", f"[tables.{toml_key(table)}]"]
        for name, (dtype, domain, grid) in columns.items():
            spec = [f"type = {toml_str(dtype)}"]
            if domain is not None:
                spec.append(f"domain = [{', '.join(str(v) for v in domain)}]")
            if grid is not None:
                spec.append(f"grid = [{', '.join(repr(v) for v in grid)}]")
            if name == PERSON:
                spec.append("person = true")
            lines.append(f"{toml_key(name)} = {{ {', '.join(spec)} }}")
        if table == "observation_period":
            lines += [
                "",
                "[tables.observation_period.derived]",
                f"person_years = {{ expr = {toml_str(PERSON_YEARS)}, grid = [0, 50, 0.01] }}",
            ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- synthetic sites


def _ids(first: int, n: int) -> Array:
    """Integer record ids ``first``, ``first + 1``, ... (OMOP's ids are integers)."""
    return np.arange(first, first + n, dtype=np.int64)


def generate_omop_site(
    name: str, number: int, persons: int = OMOP_PERSONS, seed: int = DEFAULT_SEED
) -> dict[str, pd.DataFrame]:
    """The seven OMOP tables of one synthetic site, keyed by table name.

    ``number`` (1, 2, ...) makes the site's ``person_id`` and record ids disjoint from the other
    sites' (``number * 10**7 + i``). The same arguments always give the same tables.
    """
    if not 1 <= persons <= 1_000_000:
        raise ValueError(f"persons must be between 1 and 1,000,000 (ids are site * 10**7 + i), not {persons}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    rates = site_rates(name)
    base = number * 10**7
    pid = _ids(base, persons)
    male = rng.random(persons) < 0.48
    entry = _START + rng.integers(0, _ENTRY_SPAN, persons)
    age = np.clip(np.round(rng.normal(rates.mean_age, 16, persons)), 18, 95).astype(np.int64)
    birth = entry - age * 365 - rng.integers(0, 365, persons)
    birth_dates = pd.DatetimeIndex(_dates(birth))

    death_hazard = rates.deaths_per_1000py / 1000 * np.exp(0.08 * (age - 70)) * np.where(male, 1.3, 1.0)
    death = entry + np.ceil(rng.exponential(1 / death_hazard) * 365.25).astype(np.int64)
    lost = entry + np.ceil(rng.exponential(1 / rates.loss_per_year, persons) * 365.25).astype(np.int64)
    end = np.minimum(np.minimum(death, lost), _END)
    died = death <= end

    t2dm_hazard = rates.t2dm_per_1000py / 1000 * np.exp(0.035 * (age - 50)) * np.where(male, 1.4, 1.0)
    onset = entry + np.floor(rng.exponential(1 / t2dm_hazard) * 365.25).astype(np.int64)
    case = onset <= end

    # conditions: the diagnosis, later records of the set, and background conditions
    cases = np.flatnonzero(case)
    first_concept = rng.choice(np.array(T2DM_CONCEPTS), len(cases), p=_T2DM_FIRST)
    repeats = np.repeat(cases, rng.poisson(2.0, len(cases)))
    repeat_day = _day_between(rng, onset[repeats], end[repeats])
    c_pid, c_day = [cases, repeats], [onset[cases], repeat_day]
    c_concept = [first_concept, rng.choice(np.array(T2DM_CONCEPTS), len(repeats))]
    span = (end - entry + 1) / 365.25
    for concept, per_year in OTHER_CONDITIONS.items():
        who = np.repeat(np.arange(persons), rng.poisson(per_year * span))
        c_pid.append(who)
        c_concept.append(np.full(len(who), concept))
        c_day.append(_day_between(rng, entry[who], end[who]))
    cond_pid, cond_concept, cond_day = (np.concatenate(x) for x in (c_pid, c_concept, c_day))
    order = np.lexsort((cond_day, cond_pid))
    cond_pid, cond_concept, cond_day = cond_pid[order], cond_concept[order], cond_day[order]
    n_cond = len(cond_pid)

    # one visit per condition record: mostly outpatient
    visit_kind = rng.choice(np.array(VISIT_CONCEPTS), n_cond, p=(0.12, 0.80, 0.08))
    stay = np.where(visit_kind == INPATIENT, rng.integers(1, 10, n_cond), 0)
    visit_id = _ids(base, n_cond)

    # metformin from diagnosis on, statins in the background
    on_met = np.repeat(cases, rng.poisson(4.0, len(cases)) + 1)
    met_day = _day_between(rng, onset[on_met], end[on_met])
    statin = np.repeat(np.arange(persons), rng.poisson(0.3 * span))
    d_pid = np.concatenate([on_met, statin])
    d_concept = np.concatenate([np.full(len(on_met), METFORMIN), np.full(len(statin), ATORVASTATIN)])
    d_day = np.concatenate([met_day, _day_between(rng, entry[statin], end[statin])])
    supply = rng.choice(np.array([30, 90]), len(d_pid), p=(0.6, 0.4))

    # HbA1c (%): yearly-ish in cases, now and then in others
    m_pid = np.concatenate([np.repeat(cases, rng.poisson(3.0, len(cases))), rng.choice(persons, persons // 3)])
    m_day = _day_between(rng, entry[m_pid], end[m_pid])
    diabetic = case[m_pid] & (m_day >= onset[m_pid])
    value = np.round(np.where(diabetic, rng.normal(7.6, 1.2, len(m_pid)), rng.normal(5.4, 0.4, len(m_pid))), 1)

    dead = np.flatnonzero(died)
    return {
        "person": pd.DataFrame(
            {
                "person_id": pid,
                "gender_concept_id": np.where(male, MALE, FEMALE),
                "year_of_birth": birth_dates.year.to_numpy(),
                "month_of_birth": birth_dates.month.to_numpy(),
                "day_of_birth": birth_dates.day.to_numpy(),
                "race_concept_id": rng.choice(np.array(RACES), persons, p=(0.7, 0.15, 0.1, 0.05)),
                "ethnicity_concept_id": rng.choice(np.array(ETHNICITIES), persons, p=(0.85, 0.15)),
            }
        ),
        "observation_period": pd.DataFrame(
            {
                "observation_period_id": _ids(base, persons),
                "person_id": pid,
                "observation_period_start_date": _dates(entry),
                "observation_period_end_date": _dates(end),
                "period_type_concept_id": EHR,
            }
        ),
        "visit_occurrence": pd.DataFrame(
            {
                "visit_occurrence_id": visit_id,
                "person_id": pid[cond_pid],
                "visit_concept_id": visit_kind,
                "visit_start_date": _dates(cond_day),
                "visit_end_date": _dates(np.minimum(cond_day + stay, end[cond_pid])),
                "visit_type_concept_id": EHR,
            }
        ),
        "condition_occurrence": pd.DataFrame(
            {
                "condition_occurrence_id": _ids(base, n_cond),
                "person_id": pid[cond_pid],
                "condition_concept_id": cond_concept,
                "condition_start_date": _dates(cond_day),
                "condition_end_date": pd.NaT,
                "condition_type_concept_id": EHR,
                "visit_occurrence_id": visit_id,
            }
        ),
        "drug_exposure": pd.DataFrame(
            {
                "drug_exposure_id": _ids(base, len(d_pid)),
                "person_id": pid[d_pid],
                "drug_concept_id": d_concept,
                "drug_exposure_start_date": _dates(d_day),
                "drug_exposure_end_date": _dates(d_day + supply - 1),
                "drug_type_concept_id": EHR,
                "quantity": supply.astype(float),
                "days_supply": supply,
                "visit_occurrence_id": pd.NA,
            }
        ),
        "measurement": pd.DataFrame(
            {
                "measurement_id": _ids(base, len(m_pid)),
                "person_id": pid[m_pid],
                "measurement_concept_id": HBA1C,
                "measurement_date": _dates(m_day),
                "measurement_type_concept_id": EHR,
                "value_as_number": value,
                "unit_concept_id": PERCENT,
                "visit_occurrence_id": pd.NA,
            }
        ),
        "death": pd.DataFrame(
            {
                "person_id": pid[dead],
                "death_date": _dates(death[dead]),
                "death_type_concept_id": EHR,
                "cause_concept_id": 0,
            }
        ),
    }


def write_omop_table(connection: duckdb.DuckDBPyConnection, frame: pd.DataFrame, table: str, path: Path) -> None:
    """Write ``frame`` as Parquet at ``path`` with the preset's column types."""
    select = ", ".join(
        f'CAST("{col}" AS {_SQL_TYPES[dtype]}) AS "{col}"' for col, (dtype, _, _) in OMOP_TABLES[table].items()
    )
    target = str(path).replace("'", "''")
    connection.register("frame", frame)
    try:
        connection.execute(f"COPY (SELECT {select} FROM frame) TO '{target}' (FORMAT parquet)")
    finally:
        connection.unregister("frame")


def write_omop_data(
    root: Path, sites: Sequence[str] = DEFAULT_SITES, persons: int = OMOP_PERSONS, seed: int = DEFAULT_SEED
) -> dict[str, dict[str, Path]]:
    """Generate every site and write ``root/SITE/TABLE.parquet``; returns site -> table -> path."""
    written: dict[str, dict[str, Path]] = {}
    connection = duckdb.connect()
    try:
        for number, site in enumerate(sites, start=1):
            folder = Path(root) / site
            folder.mkdir(parents=True, exist_ok=True)
            written[site] = {}
            for table, frame in generate_omop_site(site, number, persons, seed).items():
                path = folder / f"{table}.parquet"
                write_omop_table(connection, frame, table, path)
                written[site][table] = path
    finally:
        connection.close()
    return written
