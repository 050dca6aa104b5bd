"""Seeded synthetic EHR-like data for the demo consortium's hospitals.

Every site gets five tables, generated with vectorized numpy (a site of 100,000 patients in about
a second) and written as Parquet files that DuckDB reads directly. The data are fake but
behave like hospital data so that pooled analyses have something real to find:

* sites differ: ``north`` (older industrial area, many smokers: COPD and lung cancer),
  ``central`` (younger city teaching hospital: cancer and cardiology centre, fewer readmissions),
  ``south`` (retirement coast, oldest: hip fractures, heart failure, most readmissions); any other
  name gets a profile derived from the name;
* patient risk factors drive the case mix, lengths of stay, readmissions, adverse events and labs;
* ``readmitted_30d`` is computed from the admission dates, never drawn on its own;
* a few rare ICD-10 codes (``RARE_CODES``) occur 2-4 times at every site: each site's count is
  below the disclosure threshold of 5, the pooled count of three sites is not;
* survival follows a Weibull proportional-hazards model with known hazard ratios (``TRUTH``) that a
  Cox model fitted on the pooled ``survival`` table recovers; nobody is admitted after death.

Tables (``TABLE_SCHEMAS`` has each column's DuckDB type, description and whether it identifies a
patient or admission; ``docs/demo-data.md`` has the same with examples):

``patients``
    patient_id, sex, birth_year, age, smoker, bmi, diabetes, hypertension, region, index_date
``admissions``
    admission_id, patient_id, admit_date, discharge_date, length_of_stay, ward, primary_dx, age,
    readmitted_30d, adverse_event, period
``diagnoses``
    patient_id, icd10, dx_date (admission diagnoses, chronic conditions, outpatient problems)
``labs``
    patient_id, test, value, unit, taken_at (hba1c, creatinine, ldl, crp, hb)
``survival``
    patient_id, cohort, entry_date, time_days, event, age, sex, treatment, stage

The study runs from ``STUDY_START`` to ``STUDY_END``; patients enter at their ``index_date``
during the first two years and are followed until death or the end of the study.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import duckdb
import numpy as np
import pandas as pd

Array = np.ndarray
DEFAULT_SITES: tuple[str, ...] = ("north", "central", "south")
DEFAULT_PATIENTS = 100_000
DEFAULT_SEED = 20240501
STUDY_START = np.datetime64("2019-01-01", "D")
STUDY_END = np.datetime64("2023-12-31", "D")
READMISSION_WINDOW_DAYS = 30

_START = int(STUDY_START.astype(np.int64))
_END = int(STUDY_END.astype(np.int64))
_INDEX_SPAN = 731  # index dates fall in 2019-2020


# --------------------------------------------------------------------------- table schemas


@dataclass(frozen=True)
class Column:
    """One column of a demo table: its DuckDB type, what it holds, and whether it identifies someone."""

    sql_type: str
    description: str
    identifier: bool = False


def _schema(**columns: Column) -> Mapping[str, Column]:
    """A read-only column mapping, in the order the table's files hold the columns."""
    return MappingProxyType(columns)


_PATIENT_ID = Column("VARCHAR", "site-prefixed patient number, e.g. 'north-000001'", identifier=True)

TABLE_SCHEMAS: Mapping[str, Mapping[str, Column]] = MappingProxyType(
    {
        "patients": _schema(
            patient_id=_PATIENT_ID,
            sex=Column("VARCHAR", "'F' or 'M'"),
            birth_year=Column("INTEGER", "year of birth"),
            age=Column("INTEGER", "completed years at index_date (18-100)"),
            smoker=Column("BOOLEAN", "current smoker at index_date"),
            bmi=Column("DOUBLE", "body-mass index in kg/m2 (one decimal)"),
            diabetes=Column("BOOLEAN", "type 2 diabetes diagnosed before index_date"),
            hypertension=Column("BOOLEAN", "hypertension diagnosed before index_date"),
            region=Column("VARCHAR", "postcode district of residence (coarse, e.g. 'NE3')"),
            index_date=Column("DATE", "start of follow-up (2019-2020)"),
        ),
        "admissions": _schema(
            admission_id=Column("VARCHAR", "site-prefixed admission number, e.g. 'north-A000001'", identifier=True),
            patient_id=_PATIENT_ID,
            admit_date=Column("DATE", "day of admission"),
            discharge_date=Column("DATE", "day of discharge (or of death in hospital)"),
            length_of_stay=Column("INTEGER", "discharge_date - admit_date in days (0 = same-day discharge)"),
            ward=Column("VARCHAR", "ward of the stay, e.g. 'cardiology', 'icu'"),
            primary_dx=Column("VARCHAR", "primary diagnosis as an ICD-10 category, e.g. 'I21'"),
            age=Column("INTEGER", "completed years at admission"),
            readmitted_30d=Column("BOOLEAN", "the patient's next admission starts 0-30 days after this discharge"),
            adverse_event=Column("BOOLEAN", "an adverse event was recorded during the stay"),
            period=Column("VARCHAR", "calendar quarter of admission, e.g. '2021-Q3'"),
        ),
        "diagnoses": _schema(
            patient_id=_PATIENT_ID,
            icd10=Column("VARCHAR", "ICD-10 category, e.g. 'E11'"),
            dx_date=Column("DATE", "day the diagnosis was recorded"),
        ),
        "labs": _schema(
            patient_id=_PATIENT_ID,
            test=Column("VARCHAR", "'hba1c', 'creatinine', 'ldl', 'crp' or 'hb'"),
            value=Column("DOUBLE", "result in unit"),
            unit=Column(
                "VARCHAR", "'mmol/mol' (hba1c), 'umol/L' (creatinine), 'mmol/L' (ldl), 'mg/L' (crp), 'g/L' (hb)"
            ),
            taken_at=Column("TIMESTAMP", "when the sample was taken"),
        ),
        "survival": _schema(
            patient_id=_PATIENT_ID,
            cohort=Column("VARCHAR", "'lung_cancer' (first C34 admission) or 'heart_failure' (first I50 admission)"),
            entry_date=Column("DATE", "cohort entry: the first admission with the cohort's diagnosis"),
            time_days=Column("INTEGER", "days from entry_date to death or censoring (>= 1)"),
            event=Column("BOOLEAN", "death observed (False = censored: lost to follow-up or study end)"),
            age=Column("INTEGER", "completed years at entry_date"),
            sex=Column("VARCHAR", "'F' or 'M'"),
            treatment=Column("VARCHAR", "'standard' or 'new'"),
            stage=Column("INTEGER", "1-4: TNM stage (lung_cancer) or NYHA class (heart_failure)"),
        ),
    }
)


def identifier_columns(table: str) -> list[str]:
    """The columns of ``table`` that identify a patient or admission (a site policy's ``identifiers``)."""
    return [name for name, column in TABLE_SCHEMAS[table].items() if column.identifier]


# --------------------------------------------------------------------------- ground truth

_HAZARD_RATIOS = {"age_per_10_years": 1.35, "sex_male": 1.25, "treatment_new": 0.70, "stage_per_level": 1.60}
_BETA = {name: math.log(hr) for name, hr in _HAZARD_RATIOS.items()}
_COHORTS = ("lung_cancer", "heart_failure")
_COHORT_CODES = ("C34", "I50")  # a patient with both joins the first cohort
_WEIBULL_SHAPE = np.array([0.9, 1.1])
_WEIBULL_MEDIAN_DAYS = np.array([1100.0, 3000.0])  # at the reference: age 70, female, standard, stage 1
_REFERENCE_AGE = 70
_DROPOUT_MEAN_DAYS = 4000.0
RARE_CODES: tuple[str, ...] = ("A39", "G61", "M31", "T63")
_RARE_COUNT = (2, 4)

TRUTH: Mapping[str, Any] = MappingProxyType(
    {
        "hazard_ratios": dict(_HAZARD_RATIOS),
        "log_hazard_ratios": dict(_BETA),
        "hazard_model": (
            "h(t) = h0_cohort(t) * exp(b_age * (age - 70) / 10 + b_male * [sex == 'M'] "
            "+ b_new * [treatment == 'new'] + b_stage * (stage - 1)), Weibull h0 per cohort"
        ),
        "weibull": {
            cohort: {"shape": float(k), "median_days_at_reference": float(m)}
            for cohort, k, m in zip(_COHORTS, _WEIBULL_SHAPE, _WEIBULL_MEDIAN_DAYS, strict=True)
        },
        "dropout_mean_days": _DROPOUT_MEAN_DAYS,
        "rare_codes": RARE_CODES,
        "rare_count_per_site": _RARE_COUNT,
        "readmission_window_days": READMISSION_WINDOW_DAYS,
    }
)


# --------------------------------------------------------------------------- diagnoses and wards

WARDS: tuple[str, ...] = (
    "cardiology",
    "respiratory",
    "oncology",
    "orthopaedics",
    "general_medicine",
    "general_surgery",
    "renal",
    "stroke",
    "icu",
)
_ICU = WARDS.index("icu")
# Baseline risk of an adverse event during a stay, per ward (before age, length of stay and site).
_WARD_ADVERSE = np.array([0.035, 0.040, 0.055, 0.065, 0.035, 0.055, 0.045, 0.055, 0.130])


@dataclass(frozen=True)
class Condition:
    """A primary diagnosis: ICD-10 category, name, relative frequency, usual ward, median stay, ICU risk."""

    code: str
    name: str
    weight: float
    ward: str
    los_median: float
    icu: float = 0.02


CONDITIONS: tuple[Condition, ...] = (
    Condition("I21", "acute myocardial infarction", 4.0, "cardiology", 4, 0.06),
    Condition("I50", "heart failure", 3.5, "cardiology", 7),
    Condition("J44", "chronic obstructive pulmonary disease", 4.5, "respiratory", 4),
    Condition("J18", "pneumonia", 6.0, "respiratory", 5, 0.04),
    Condition("E11", "type 2 diabetes mellitus", 2.0, "general_medicine", 3),
    Condition("N18", "chronic kidney disease", 1.5, "renal", 5),
    Condition("C34", "malignant neoplasm of bronchus and lung", 2.5, "oncology", 6),
    Condition("S72", "fracture of femur", 3.0, "orthopaedics", 10),
    Condition("I48", "atrial fibrillation and flutter", 3.0, "cardiology", 3),
    Condition("I20", "angina pectoris", 2.0, "cardiology", 2),
    Condition("R07", "pain in throat and chest", 5.0, "cardiology", 1, 0.0),
    Condition("R55", "syncope and collapse", 2.5, "general_medicine", 2, 0.0),
    Condition("I63", "cerebral infarction", 2.5, "stroke", 9),
    Condition("I61", "intracerebral haemorrhage", 0.4, "stroke", 12, 0.25),
    Condition("I26", "pulmonary embolism", 1.0, "respiratory", 4),
    Condition("I80", "phlebitis and thrombophlebitis", 0.8, "general_medicine", 2, 0.0),
    Condition("J45", "asthma", 1.2, "respiratory", 2),
    Condition("J22", "acute lower respiratory infection", 2.5, "respiratory", 3),
    Condition("A41", "other sepsis", 2.0, "general_medicine", 8, 0.20),
    Condition("N39", "urinary tract infection", 3.0, "general_medicine", 4),
    Condition("N17", "acute kidney failure", 1.5, "renal", 6, 0.05),
    Condition("L03", "cellulitis", 2.0, "general_medicine", 4, 0.0),
    Condition("K80", "cholelithiasis", 2.0, "general_surgery", 3),
    Condition("K35", "acute appendicitis", 1.5, "general_surgery", 3),
    Condition("K57", "diverticular disease of intestine", 1.2, "general_surgery", 4),
    Condition("K92", "gastrointestinal haemorrhage", 1.2, "general_surgery", 4, 0.05),
    Condition("K85", "acute pancreatitis", 0.8, "general_surgery", 6, 0.08),
    Condition("R10", "abdominal and pelvic pain", 4.0, "general_surgery", 1, 0.0),
    Condition("E86", "volume depletion", 1.0, "general_medicine", 3),
    Condition("E87", "fluid, electrolyte and acid-base disorders", 1.0, "general_medicine", 4),
    Condition("F10", "disorders due to use of alcohol", 1.0, "general_medicine", 3),
    Condition("F05", "delirium", 0.8, "general_medicine", 9),
    Condition("G40", "epilepsy", 0.8, "general_medicine", 2),
    Condition("G30", "Alzheimer disease", 0.4, "general_medicine", 12),
    Condition("D64", "other anaemias", 1.0, "general_medicine", 2, 0.0),
    Condition("C18", "malignant neoplasm of colon", 0.8, "oncology", 8),
    Condition("C50", "malignant neoplasm of breast", 0.8, "oncology", 3),
    Condition("C61", "malignant neoplasm of prostate", 0.6, "oncology", 4),
    Condition("S06", "intracranial injury", 0.8, "orthopaedics", 5, 0.10),
    Condition("T81", "complications of procedures", 0.8, "general_surgery", 5),
    Condition("M54", "dorsalgia", 1.2, "general_medicine", 2, 0.0),
    Condition("I71", "aortic aneurysm and dissection", 0.15, "general_surgery", 8, 0.30),
    Condition("G35", "multiple sclerosis", 0.10, "general_medicine", 5),
    Condition("K50", "Crohn disease", 0.15, "general_surgery", 5),
    Condition("D69", "purpura and other haemorrhagic conditions", 0.10, "general_medicine", 4),
    # Rare: never drawn, placed a fixed 2-4 times per site (see _place_rare_codes).
    Condition("A39", "meningococcal infection", 0.0, "icu", 10),
    Condition("G61", "inflammatory polyneuropathy", 0.0, "general_medicine", 14),
    Condition("M31", "other necrotising vasculopathies", 0.0, "general_medicine", 9),
    Condition("T63", "toxic effect of contact with venomous animals", 0.0, "general_medicine", 2),
)

_CODES = np.array([c.code for c in CONDITIONS], dtype=object)
_DX = {c.code: i for i, c in enumerate(CONDITIONS)}
_DX_WARD = np.array([WARDS.index(c.ward) for c in CONDITIONS])
_DX_LOS = np.array([c.los_median for c in CONDITIONS])
_DX_ICU = np.array([c.icu for c in CONDITIONS])
_CANCER = np.array([c.code.startswith("C") for c in CONDITIONS])
_CARDIAC = np.isin(_CODES, ["I20", "I21", "I48", "I50", "I63"])
# Log-odds added to a site's readmission probability after a stay for this diagnosis.
_READMIT_DX = np.zeros(len(CONDITIONS))
_READMIT_SHIFT = {"I50": 0.6, "J44": 0.5, "C34": 0.4, "N18": 0.4, "A41": 0.3, "E11": 0.2}
_READMIT_SHIFT |= {"K35": -0.8, "R07": -0.5, "R10": -0.4, "K80": -0.4, "S72": -0.1}
for _code, _shift in _READMIT_SHIFT.items():
    _READMIT_DX[_DX[_code]] = _shift

# Problems recorded outside hospital (diagnoses table only), with relative frequencies.
_OUTPATIENT = {"J06": 3.0, "M54": 2.0, "K21": 1.5, "F32": 1.5, "M17": 1.2, "H25": 1.0, "J30": 1.0, "L40": 0.4}
# Conditions recorded before the index date; a patient on a statin has hyperlipidaemia (E78) recorded.
_CHRONIC_CODES = {
    "diabetes": "E11",
    "hypertension": "I10",
    "ckd": "N18",
    "smoker": "F17",
    "obese": "E66",
    "statin": "E78",
}


# --------------------------------------------------------------------------- site profiles


@dataclass(frozen=True)
class SiteProfile:
    """What makes one hospital's population and practice differ from the others'."""

    mean_age: float
    smoker_rate: float
    admission_rate: float  # expected admission episodes per patient over the study, at the reference risk
    readmission: float  # baseline probability that a stay is followed by a readmission within 30 days
    adverse_shift: float  # log-odds shift of adverse events
    case_mix: Mapping[str, float]  # multipliers of primary-diagnosis frequencies
    new_treatment_uptake: float
    lung_stage: tuple[float, float, float, float]  # TNM stage I-IV at lung cancer diagnosis
    hf_class: tuple[float, float, float, float]  # NYHA class I-IV at heart failure diagnosis
    districts: tuple[str, ...]


SITE_PROFILES: Mapping[str, SiteProfile] = MappingProxyType(
    {
        "north": SiteProfile(
            mean_age=63,
            smoker_rate=0.24,
            admission_rate=0.85,
            readmission=0.12,
            adverse_shift=0.0,
            case_mix={"J44": 1.6, "C34": 1.6, "I21": 1.3, "J18": 1.1},
            new_treatment_uptake=0.35,
            lung_stage=(0.18, 0.14, 0.26, 0.42),
            hf_class=(0.15, 0.35, 0.35, 0.15),
            districts=("NE1", "NE4", "NE6", "NE2", "DH1", "SR2", "NE3", "TS1"),
        ),
        "central": SiteProfile(
            mean_age=54,
            smoker_rate=0.16,
            admission_rate=0.70,
            readmission=0.10,
            adverse_shift=-0.15,
            case_mix={"C34": 1.2, "C50": 1.6, "C18": 1.4, "I21": 1.4, "K35": 1.3, "F10": 1.5},
            new_treatment_uptake=0.60,
            lung_stage=(0.30, 0.18, 0.24, 0.28),
            hf_class=(0.22, 0.42, 0.27, 0.09),
            districts=("B5", "B1", "B9", "B15", "B4", "CV1", "WS1", "DY1"),
        ),
        "south": SiteProfile(
            mean_age=67,
            smoker_rate=0.12,
            admission_rate=0.95,
            readmission=0.14,
            adverse_shift=0.15,
            case_mix={"S72": 1.8, "I50": 1.5, "J18": 1.2, "I48": 1.4, "G30": 1.8, "F05": 1.5},
            new_treatment_uptake=0.45,
            lung_stage=(0.24, 0.16, 0.26, 0.34),
            hf_class=(0.12, 0.36, 0.38, 0.14),
            districts=("SO14", "PO4", "BH8", "SO15", "PO1", "BH1", "SP1", "SP2"),
        ),
    }
)


def site_profile(name: str) -> SiteProfile:
    """The profile of a named demo site; other names get one drawn reproducibly from the name."""
    if name in SITE_PROFILES:
        return SITE_PROFILES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    major = ("I21", "I50", "J44", "J18", "E11", "N18", "C34", "S72")
    prefix = "".join(ch for ch in name.upper() if ch.isalpha())[:2] or "X"
    lung, hf = rng.dirichlet([4, 3, 5, 6]), rng.dirichlet([3, 8, 6, 2])
    return SiteProfile(
        mean_age=float(rng.uniform(54, 68)),
        smoker_rate=float(rng.uniform(0.12, 0.25)),
        admission_rate=float(rng.uniform(0.7, 0.95)),
        readmission=float(rng.uniform(0.10, 0.16)),
        adverse_shift=float(rng.uniform(-0.2, 0.2)),
        case_mix={code: float(f) for code, f in zip(major, rng.lognormal(0, 0.3, len(major)), strict=True)},
        new_treatment_uptake=float(rng.uniform(0.3, 0.6)),
        lung_stage=(float(lung[0]), float(lung[1]), float(lung[2]), float(lung[3])),
        hf_class=(float(hf[0]), float(hf[1]), float(hf[2]), float(hf[3])),
        districts=tuple(f"{prefix}{k}" for k in range(1, 9)),
    )


# --------------------------------------------------------------------------- small helpers


def _sigmoid(x: Array) -> Array:
    """Probabilities from log-odds."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _logit(p: float) -> float:
    """Log-odds of a probability."""
    return math.log(p / (1.0 - p))


def _draw_rows(rng: np.random.Generator, weights: Array) -> Array:
    """One categorical draw per row: column j with probability weights[i, j] / sum(weights[i])."""
    cumulative = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cumulative[:, -1]
    return np.asarray(np.minimum((cumulative < u[:, None]).sum(axis=1), weights.shape[1] - 1))


def _group_starts(group: Array) -> Array:
    """Start position of each run of equal values in a sorted array."""
    return np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(group) else np.zeros(0, dtype=np.int64)


def _rank_within(group: Array) -> Array:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    starts = _group_starts(group)
    lengths = np.diff(np.r_[starts, len(group)])
    return np.asarray(np.arange(len(group)) - np.repeat(starts, lengths))


def _ids(prefix: str, count: int) -> Array:
    """``prefix`` followed by zero-padded numbers 1..count, as an object array of str."""
    numbers = np.char.zfill(np.arange(1, count + 1).astype(str), max(6, len(str(count))))
    return np.char.add(prefix, numbers).astype(object)


def _calendar(days: Array) -> tuple[Array, Array]:
    """(year, month * 100 + day of month) of days counted from 1970-01-01."""
    day = np.asarray(days, dtype=np.int64).astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    year = month.astype("datetime64[Y]").astype(np.int64) + 1970
    in_month = (day - month.astype("datetime64[D]")).astype(np.int64) + 1
    return year, (month.astype(np.int64) % 12 + 1) * 100 + in_month


def _completed_years(birth_day: Array, on_day: Array) -> Array:
    """Age in completed years on ``on_day`` of people born on ``birth_day``."""
    (born, birthday), (year, date) = _calendar(birth_day), _calendar(on_day)
    return np.asarray(year - born - (date < birthday))


def _dates(days: Array) -> Array:
    """Days counted from 1970-01-01 as datetime64 values pandas keeps as they are."""
    return np.asarray(days, dtype=np.int64).astype("datetime64[D]").astype("datetime64[s]")


def _sex(male: Array) -> Array:
    """'M' or 'F' per patient."""
    return np.where(male, "M", "F").astype(object)


# --------------------------------------------------------------------------- patients


@dataclass(frozen=True)
class _People:
    """Per-patient arrays (position = patient number - 1); days count from 1970-01-01."""

    index_day: Array
    birth_day: Array
    age: Array
    male: Array
    bmi: Array
    flags: Mapping[str, Array]  # keyed like _CHRONIC_CODES
    region: Array


def _people(rng: np.random.Generator, n: int, profile: SiteProfile) -> _People:
    """Demographics and risk factors; comorbidities follow age, sex and BMI."""
    index_day = _START + rng.integers(0, _INDEX_SPAN, n)
    mean = (profile.mean_age - 18) / 82
    years = 18.01 + 81.98 * rng.beta(5.5 * mean, 5.5 * (1 - mean), n)  # smooth, no pile-up at the limits
    birth_day = index_day - np.floor(years * 365.25).astype(np.int64)
    age = _completed_years(birth_day, index_day)
    male = rng.random(n) < 0.49
    bmi = np.clip(np.round(rng.lognormal(math.log(27.0), 0.17, n), 1), 15.0, 65.0)
    smoker = rng.random(n) < _sigmoid(_logit(profile.smoker_rate) + 0.3 * male - 0.02 * (age - 50))
    diabetes = rng.random(n) < _sigmoid(-2.6 + 0.04 * (age - 50) + 0.12 * (bmi - 27))
    hypertension = rng.random(n) < _sigmoid(-1.3 + 0.06 * (age - 50) + 0.08 * (bmi - 27) + 0.5 * diabetes)
    ckd = rng.random(n) < _sigmoid(-3.6 + 0.06 * (age - 50) + 0.8 * diabetes + 0.6 * hypertension)
    statin = rng.random(n) < 0.08 + 0.45 * (diabetes | hypertension | ckd)
    popularity = 1.0 / np.arange(1, len(profile.districts) + 1)  # the first district is the largest
    region = rng.choice(np.array(profile.districts, dtype=object), n, p=popularity / popularity.sum())
    flags = {
        "diabetes": diabetes,
        "hypertension": hypertension,
        "ckd": ckd,
        "smoker": smoker,
        "obese": bmi >= 30,
        "statin": statin,
    }
    return _People(index_day, birth_day, age, male, bmi, flags, region)


# --------------------------------------------------------------------------- admissions


@dataclass(frozen=True)
class _Stays:
    """Admission arrays, sorted by patient then admission day."""

    pid: Array
    dx: Array
    ward: Array
    admit: Array
    discharge: Array
    age: Array

    def take(self, rows: Array) -> _Stays:
        """The admissions at positions ``rows``."""
        return _Stays(*(getattr(self, f.name)[rows] for f in fields(self)))


def _draw_dx(rng: np.random.Generator, people: _People, pid: Array, profile: SiteProfile) -> Array:
    """Primary diagnoses for admissions of patients ``pid``: the site's case mix times patient risk."""
    base = np.array([c.weight * profile.case_mix.get(c.code, 1.0) for c in CONDITIONS])
    w = np.tile(base, (len(pid), 1))
    age, male, f = people.age[pid], people.male[pid], {k: v[pid] for k, v in people.flags.items()}
    older, younger = np.exp(0.04 * (age - 65)), np.exp(-0.03 * (age - 65))

    def scale(codes: Sequence[str], factor: Array | float) -> None:
        w[:, [_DX[c] for c in codes]] *= np.asarray(factor, dtype=float).reshape(-1, 1)

    scale(["I50", "S72", "I48", "J18", "F05", "G30", "A41", "I63"], older)
    scale(["K35", "F10", "G40", "J45", "R07", "R10"], younger)
    scale(["J44", "C34"], np.where(f["smoker"], 3.0, 0.7))
    scale(["I21"], np.where(f["smoker"], 1.6, 1.0) * np.where(male, 1.5, 0.8))
    scale(["S72"], np.where(male, 0.6, 1.4))
    scale(["C61"], male * 2.0)
    scale(["C50"], np.where(male, 0.01, 2.0))
    scale(["E11"], np.where(f["diabetes"], 6.0, 0.15))
    scale(["N18"], np.where(f["ckd"], 6.0, 0.2))
    scale(["N17", "L03"], np.where(f["diabetes"] | f["ckd"], 1.8, 1.0))
    scale(["I21", "I50", "I63"], np.where(f["hypertension"], 1.4, 0.9))
    return _draw_rows(rng, w)


def _readmission_probability(people: _People, pid: Array, dx: Array, profile: SiteProfile) -> Array:
    """Probability that a stay is followed by another admission within the readmission window."""
    logit = _logit(profile.readmission) + 0.015 * (people.age[pid] - 65) + _READMIT_DX[dx]
    return _sigmoid(logit + 0.2 * people.flags["diabetes"][pid])


def _episodes(rng: np.random.Generator, people: _People, profile: SiteProfile) -> tuple[Array, Array, Array, Array]:
    """Admissions as (patient, chain, position in chain, diagnosis), sorted in each patient's time order.

    Each patient has a Poisson number of independent admission chains; each stay in a chain is
    followed by an early readmission with a probability depending on the stay
    (``_readmission_probability``). Readmissions repeat the previous diagnosis half of the time.
    """
    f = people.flags
    risk = 0.02 * (people.age - 60) + 0.3 * f["diabetes"] + 0.2 * f["smoker"] + 0.2 * f["hypertension"]
    chains = np.minimum(rng.poisson(profile.admission_rate * np.exp(risk + 0.4 * f["ckd"])), 12)
    pid = np.repeat(np.arange(len(people.age)), chains)
    chain, dx = _rank_within(pid), _draw_dx(rng, people, pid, profile)
    parts = [(pid, chain, np.zeros_like(pid), dx)]
    for step in range(1, 6):
        again = rng.random(len(pid)) < _readmission_probability(people, pid, dx, profile)
        pid, chain, dx = pid[again], chain[again], dx[again]
        dx = np.where(rng.random(len(pid)) < 0.5, dx, _draw_dx(rng, people, pid, profile))
        parts.append((pid, chain, np.full_like(pid, step), dx))
    pid, chain, position, dx = (np.concatenate(column) for column in zip(*parts, strict=True))
    order = np.lexsort((position, chain, pid))
    return pid[order], chain[order], position[order], dx[order]


def _stays(rng: np.random.Generator, people: _People, profile: SiteProfile) -> _Stays:
    """Admissions laid out in time without overlap, kept if discharged by the end of the study.

    The gap before a stay is measured from the previous discharge (from the index date for the
    first): 1-30 days for a readmission within a chain, more than 30 days between chains.
    """
    pid, chain, position, dx = _episodes(rng, people, profile)
    m = len(pid)
    gap = np.where(position > 0, 1 + rng.beta(1.2, 2.5, m) * 30, 31 + rng.exponential(420.0, m))
    gap = np.floor(np.where((chain == 0) & (position == 0), rng.exponential(500.0, m), gap)).astype(np.int64)
    ward = np.where(rng.random(m) < _DX_ICU[dx], _ICU, _DX_WARD[dx])
    noise = np.exp(0.6 * rng.standard_normal(m) + 0.01 * (people.age[pid] - 65))
    los = np.clip(np.round(_DX_LOS[dx] * noise * np.where(ward == _ICU, 1.8, 1.0)), 0, 120).astype(np.int64)
    elapsed = np.cumsum(gap + los)  # running over all patients; subtract what earlier patients used
    starts = _group_starts(pid)
    before = np.repeat(elapsed[starts] - gap[starts] - los[starts], np.diff(np.r_[starts, m]))
    admit = people.index_day[pid] + elapsed - before - los
    stays = _Stays(pid, dx, ward, admit, admit + los, _completed_years(people.birth_day[pid], admit))
    return stays.take(np.flatnonzero(stays.discharge <= _END))


def _until_death(stays: _Stays, death_day: Array) -> _Stays:
    """Drop admissions after a patient's death; a stay during which they died ends that day."""
    kept = stays.take(np.flatnonzero(stays.admit <= death_day[stays.pid]))
    discharge = np.minimum(kept.discharge, death_day[kept.pid])
    return _Stays(kept.pid, kept.dx, kept.ward, kept.admit, discharge, kept.age)


def _place_rare_codes(rng: np.random.Generator, stays: _Stays) -> _Stays:
    """Give 2-4 random admissions each rare code (fewer only if the site has too few admissions).

    Admissions for a survival cohort's diagnosis keep theirs, so every cohort entry stays an admission.
    """
    counts = rng.integers(_RARE_COUNT[0], _RARE_COUNT[1] + 1, len(RARE_CODES))
    candidates = np.flatnonzero(~np.isin(stays.dx, [_DX[code] for code in _COHORT_CODES]))
    rows = rng.permutation(candidates)[: int(counts.sum())]
    codes = np.repeat([_DX[c] for c in RARE_CODES], counts)[: len(rows)]
    dx, ward = stays.dx.copy(), stays.ward.copy()
    dx[rows], ward[rows] = codes, _DX_WARD[codes]
    return _Stays(stays.pid, dx, ward, stays.admit, stays.discharge, stays.age)


def _readmitted(stays: _Stays) -> Array:
    """Whether the same patient's next admission starts 0-30 days after this discharge."""
    same = np.r_[stays.pid[1:] == stays.pid[:-1], False]
    gap = np.r_[stays.admit[1:], 0] - stays.discharge
    return np.asarray(same & (gap >= 0) & (gap <= READMISSION_WINDOW_DAYS))


def _adverse_events(rng: np.random.Generator, stays: _Stays, profile: SiteProfile) -> Array:
    """Adverse events: ward baseline, raised by age and a long stay, shifted per site."""
    base = np.log(_WARD_ADVERSE / (1 - _WARD_ADVERSE))[stays.ward]
    los = stays.discharge - stays.admit
    logit = base + profile.adverse_shift + 0.02 * (stays.age - 65) + 0.3 * (np.log1p(los) - math.log(5))
    return rng.random(len(los)) < _sigmoid(logit)


def _quarters(days: Array) -> Array:
    """'YYYY-Qn' of each day."""
    months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    key, inverse = np.unique(months // 3, return_inverse=True)
    labels = np.array([f"{1970 + k // 4}-Q{k % 4 + 1}" for k in key], dtype=object)
    return labels[inverse]


# --------------------------------------------------------------------------- survival


@dataclass(frozen=True)
class _Survival:
    """Cohort arrays, one entry per cohort patient; ``cohort`` indexes _COHORTS, ``new`` is the new treatment."""

    pid: Array
    cohort: Array
    entry: Array
    time: Array
    event: Array
    age: Array
    stage: Array
    new: Array


def _cohort_entries(stays: _Stays) -> tuple[Array, Array, Array]:
    """(patient, cohort, entry day): first lung cancer admission, else first heart failure admission."""
    found = []
    taken = np.zeros(0, dtype=np.int64)
    for number, code in enumerate(_COHORT_CODES):
        rows = np.flatnonzero((stays.dx == _DX[code]) & (stays.admit < _END))
        pid, first = np.unique(stays.pid[rows], return_index=True)
        new = ~np.isin(pid, taken)
        found.append((pid[new], np.full(new.sum(), number), stays.admit[rows[first[new]]]))
        taken = np.r_[taken, pid]
    pid, cohort, entry = (np.concatenate(column) for column in zip(*found, strict=True))
    order = np.argsort(pid, kind="stable")
    return pid[order], cohort[order], entry[order]


def _survival(rng: np.random.Generator, people: _People, stays: _Stays, profile: SiteProfile) -> _Survival:
    """Weibull proportional-hazards survival from cohort entry, censored by dropout and study end."""
    pid, cohort, entry = _cohort_entries(stays)
    n = len(pid)
    age = _completed_years(people.birth_day[pid], entry)
    stages = np.array([profile.lung_stage, profile.hf_class])[cohort]
    stage = 1 + _draw_rows(rng, stages)
    uptake = _logit(profile.new_treatment_uptake) - 0.03 * (age - 65) - 0.25 * (stage - 2)
    new = rng.random(n) < _sigmoid(uptake)
    male = people.male[pid]
    lp = (
        _BETA["age_per_10_years"] * (age - _REFERENCE_AGE) / 10
        + _BETA["sex_male"] * male
        + _BETA["treatment_new"] * new
        + _BETA["stage_per_level"] * (stage - 1)
    )
    shape = _WEIBULL_SHAPE[cohort]
    scale = math.log(2) / _WEIBULL_MEDIAN_DAYS[cohort] ** shape
    death = (rng.exponential(1.0, n) / (scale * np.exp(lp))) ** (1 / shape)
    censor = np.minimum(_END - entry, rng.exponential(_DROPOUT_MEAN_DAYS, n))
    event = death <= censor
    time = np.maximum(np.ceil(np.minimum(death, censor)), 1).astype(np.int64)
    return _Survival(pid, cohort, entry, time, event, age, stage, new)


def _death_days(n: int, survival: _Survival) -> Array:
    """Each patient's day of death, or the day after the study for those not seen to die."""
    death = np.full(n, _END + 1, dtype=np.int64)
    death[survival.pid[survival.event]] = (survival.entry + survival.time)[survival.event]
    return death


# --------------------------------------------------------------------------- diagnoses and labs


def _diagnoses(rng: np.random.Generator, people: _People, stays: _Stays, last_day: Array) -> tuple[Array, ...]:
    """(patient, code, day): admission diagnoses, chronic conditions before index, outpatient problems.

    Chronic conditions were recorded up to ten years before the index date, but not before age 16.
    """
    pids, codes, days = [stays.pid], [_CODES[stays.dx]], [stays.admit]
    for flag, chronic_code in _CHRONIC_CODES.items():
        pid = np.flatnonzero(people.flags[flag])
        pids.append(pid)
        codes.append(np.full(len(pid), chronic_code, dtype=object))
        earliest = people.birth_day[pid] + 16 * 365
        days.append(np.maximum(people.index_day[pid] - rng.integers(0, 3650, len(pid)), earliest))
    pid = np.repeat(np.arange(len(people.age)), rng.poisson(1.2, len(people.age)))
    weights = np.array(list(_OUTPATIENT.values()))
    pids.append(pid)
    codes.append(rng.choice(np.array(list(_OUTPATIENT), dtype=object), len(pid), p=weights / weights.sum()))
    days.append(_day_between(rng, people.index_day[pid], last_day[pid]))
    pid, code, day = np.concatenate(pids), np.concatenate(codes), np.concatenate(days)
    order = np.lexsort((day, pid))
    return pid[order], code[order], day[order]


def _day_between(rng: np.random.Generator, first: Array, last: Array) -> Array:
    """A uniformly random day in [first, last] (last >= first) for each pair."""
    return np.asarray(first + np.floor(rng.random(len(first)) * (last - first + 1)).astype(np.int64))


@dataclass(frozen=True)
class _Draws:
    """Blood draws: patient, admission diagnosis (-1 outside hospital), minute since the epoch."""

    pid: Array
    dx: Array
    minute: Array


def _hba1c(rng: np.random.Generator, p: _People, d: _Draws) -> Array:
    """HbA1c in mmol/mol: normal around 36 without diabetes, median 58 with."""
    diabetic = p.flags["diabetes"][d.pid]
    value = np.where(diabetic, rng.lognormal(math.log(58), 0.2, len(d.pid)), rng.normal(36, 4, len(d.pid)))
    return np.clip(np.round(value), 20, 150)


def _creatinine(rng: np.random.Generator, p: _People, d: _Draws) -> Array:
    """Creatinine in umol/L: by sex, rising with age, raised by CKD and acute kidney failure."""
    median = np.where(p.male[d.pid], 88.0, 70.0) * np.exp(0.005 * (p.age[d.pid] - 50))
    median *= np.where(p.flags["ckd"][d.pid], 2.3, 1.0) * np.where(d.dx == _DX["N17"], 1.8, 1.0)
    return np.asarray(np.clip(np.round(median * rng.lognormal(0, 0.15, len(d.pid))), 30, 1200))


def _ldl(rng: np.random.Generator, p: _People, d: _Draws) -> Array:
    """LDL cholesterol in mmol/L, lowered by a statin."""
    mean = 3.3 - 1.1 * p.flags["statin"][d.pid]
    return np.asarray(np.clip(np.round(rng.normal(mean, 0.75), 1), 0.5, 9.0))


_CRP_MEDIAN = np.full(len(CONDITIONS), 12.0)
for _code, _median in {"J18": 120.0, "A41": 180.0, "N39": 70.0, "L03": 60.0, "K35": 90.0, "K85": 150.0}.items():
    _CRP_MEDIAN[_DX[_code]] = _median


def _crp(rng: np.random.Generator, p: _People, d: _Draws) -> Array:
    """CRP in mg/L: low outside hospital, high in infections and inflammation."""
    inpatient = d.dx >= 0
    median = np.where(inpatient, _CRP_MEDIAN[np.maximum(d.dx, 0)], 2.5)
    value = median * np.exp(rng.normal(0, 1, len(d.pid)) * np.where(inpatient, 0.8, 1.0))
    return np.clip(np.round(value, 1), 0.5, 400)


def _hb(rng: np.random.Generator, p: _People, d: _Draws) -> Array:
    """Haemoglobin in g/L: by sex, lowered by CKD, cancer, GI bleeding and anaemia."""
    inpatient = d.dx >= 0
    dx = np.maximum(d.dx, 0)
    mean = np.where(p.male[d.pid], 146.0, 132.0) - 14 * p.flags["ckd"][d.pid]
    mean -= inpatient * (20 * _CANCER[dx] + 30 * np.isin(dx, [_DX["K92"], _DX["D64"]]))
    return np.asarray(np.clip(np.round(rng.normal(mean, 11)), 55, 190))


_LabValues = Callable[[np.random.Generator, _People, _Draws], Array]
# test -> (unit, value generator); _lab_chance says which draws include the test
_LAB_TESTS: Mapping[str, tuple[str, _LabValues]] = MappingProxyType(
    {
        "hba1c": ("mmol/mol", _hba1c),
        "creatinine": ("umol/L", _creatinine),
        "ldl": ("mmol/L", _ldl),
        "crp": ("mg/L", _crp),
        "hb": ("g/L", _hb),
    }
)


def _lab_chance(test: str, p: _People, d: _Draws) -> Array:
    """Probability that a draw includes ``test``: routine panels in hospital, targeted tests outside."""
    inpatient = d.dx >= 0
    if test == "hba1c":
        return np.where(p.flags["diabetes"][d.pid], np.where(inpatient, 0.5, 0.9), np.where(inpatient, 0.05, 0.15))
    if test == "ldl":
        cardiac = inpatient & _CARDIAC[np.maximum(d.dx, 0)]
        return np.where(cardiac, 0.7, np.where(p.flags["statin"][d.pid], 0.5, 0.2))
    routine = {"creatinine": (0.95, 0.6), "hb": (0.95, 0.4), "crp": (0.9, 0.2)}[test]
    return np.where(inpatient, routine[0], routine[1])


def _labs(rng: np.random.Generator, people: _People, stays: _Stays, last_day: Array) -> tuple[Array, ...]:
    """(patient, test, value, unit, minute) for a panel at each admission and outpatient draws."""
    outpatient = np.repeat(np.arange(len(people.age)), rng.poisson(1.5, len(people.age)))
    out_day = _day_between(rng, people.index_day[outpatient], last_day[outpatient])
    in_minute = stays.admit * 1440 + rng.integers(0, 1440, len(stays.pid))  # any hour on the admission day
    out_minute = out_day * 1440 + rng.integers(8 * 60, 17 * 60, len(outpatient))  # clinic hours
    draws = _Draws(
        np.r_[stays.pid, outpatient], np.r_[stays.dx, np.full(len(outpatient), -1)], np.r_[in_minute, out_minute]
    )
    columns: list[tuple[Array, ...]] = []
    for name, (unit, values) in _LAB_TESTS.items():
        rows = np.flatnonzero(rng.random(len(draws.pid)) < _lab_chance(name, people, draws))
        sub = _Draws(draws.pid[rows], draws.dx[rows], draws.minute[rows])
        labels = (np.full(len(rows), text, dtype=object) for text in (name, unit))
        columns.append((sub.pid, *labels, values(rng, people, sub).astype(float), sub.minute))
    pid, test, unit_of, value, minute = (np.concatenate(c) for c in zip(*columns, strict=True))
    order = np.lexsort((minute, pid))
    return pid[order], test[order], value[order], unit_of[order], minute[order]


# --------------------------------------------------------------------------- public API


def generate_site(name: str, patients: int = DEFAULT_PATIENTS, seed: int = DEFAULT_SEED) -> dict[str, pd.DataFrame]:
    """All tables of one synthetic hospital, keyed by table name (columns as in ``TABLE_SCHEMAS``).

    The same (name, patients, seed) always gives the same data; sites with different names differ
    even under the same seed (their profiles and random streams do).
    """
    if patients < 1:
        raise ValueError(f"patients must be at least 1, not {patients}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    profile = site_profile(name)
    people = _people(rng, patients, profile)
    stays = _stays(rng, people, profile)
    survival = _survival(rng, people, stays, profile)
    death = _death_days(patients, survival)
    stays = _place_rare_codes(rng, _until_death(stays, death))
    last_day = np.minimum(death, _END)
    ids = _ids(f"{name}-", patients)
    return {
        "patients": _patients_frame(people, ids),
        "admissions": _admissions_frame(rng, stays, profile, ids, name),
        "diagnoses": _diagnoses_frame(ids, *_diagnoses(rng, people, stays, last_day)),
        "labs": _labs_frame(ids, *_labs(rng, people, stays, last_day)),
        "survival": _survival_frame(survival, people, ids),
    }


def _diagnoses_frame(ids: Array, pid: Array, code: Array, day: Array) -> pd.DataFrame:
    """The ``diagnoses`` table."""
    return pd.DataFrame({"patient_id": ids[pid], "icd10": code, "dx_date": _dates(day)})


def _patients_frame(people: _People, ids: Array) -> pd.DataFrame:
    """The ``patients`` table."""
    f = people.flags
    return pd.DataFrame(
        {
            "patient_id": ids,
            "sex": _sex(people.male),
            "birth_year": _calendar(people.birth_day)[0],
            "age": people.age,
            "smoker": f["smoker"],
            "bmi": people.bmi,
            "diabetes": f["diabetes"],
            "hypertension": f["hypertension"],
            "region": people.region,
            "index_date": _dates(people.index_day),
        }
    )


def _admissions_frame(
    rng: np.random.Generator, stays: _Stays, profile: SiteProfile, ids: Array, name: str
) -> pd.DataFrame:
    """The ``admissions`` table, with its derived flags and adverse events."""
    return pd.DataFrame(
        {
            "admission_id": _ids(f"{name}-A", len(stays.pid)),
            "patient_id": ids[stays.pid],
            "admit_date": _dates(stays.admit),
            "discharge_date": _dates(stays.discharge),
            "length_of_stay": stays.discharge - stays.admit,
            "ward": np.array(WARDS, dtype=object)[stays.ward],
            "primary_dx": _CODES[stays.dx],
            "age": stays.age,
            "readmitted_30d": _readmitted(stays),
            "adverse_event": _adverse_events(rng, stays, profile),
            "period": _quarters(stays.admit),
        }
    )


def _labs_frame(ids: Array, pid: Array, test: Array, value: Array, unit: Array, minute: Array) -> pd.DataFrame:
    """The ``labs`` table."""
    taken_at = minute.astype("datetime64[m]").astype("datetime64[s]")
    return pd.DataFrame({"patient_id": ids[pid], "test": test, "value": value, "unit": unit, "taken_at": taken_at})


def _survival_frame(s: _Survival, people: _People, ids: Array) -> pd.DataFrame:
    """The ``survival`` table."""
    return pd.DataFrame(
        {
            "patient_id": ids[s.pid],
            "cohort": np.array(_COHORTS, dtype=object)[s.cohort],
            "entry_date": _dates(s.entry),
            "time_days": s.time,
            "event": s.event,
            "age": s.age,
            "sex": _sex(people.male[s.pid]),
            "treatment": np.where(s.new, "new", "standard").astype(object),
            "stage": s.stage,
        }
    )


def write_table(connection: duckdb.DuckDBPyConnection, frame: pd.DataFrame, table: str, path: Path) -> None:
    """Write ``frame`` as Parquet at ``path`` with the column types of ``TABLE_SCHEMAS[table]``."""
    select = ", ".join(f'CAST("{col}" AS {spec.sql_type}) AS "{col}"' for col, spec in TABLE_SCHEMAS[table].items())
    target = str(path).replace("'", "''")
    connection.register("frame", frame)
    try:
        connection.execute(f"COPY (SELECT {select} FROM frame) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    finally:
        connection.unregister("frame")


def write_consortium_data(
    root: Path,
    sites: Sequence[str] = DEFAULT_SITES,
    patients: int = DEFAULT_PATIENTS,
    seed: int = DEFAULT_SEED,
) -> dict[str, dict[str, Path]]:
    """Generate every site and write ``root/SITE/TABLE.parquet``; returns site -> table -> path."""
    written: dict[str, dict[str, Path]] = {}
    connection = duckdb.connect()
    try:
        for site in sites:
            folder = Path(root) / site
            folder.mkdir(parents=True, exist_ok=True)
            written[site] = {}
            for table, frame in generate_site(site, patients, seed).items():
                path = folder / f"{table}.parquet"
                write_table(connection, frame, table, path)
                written[site][table] = path
    finally:
        connection.close()
    return written
