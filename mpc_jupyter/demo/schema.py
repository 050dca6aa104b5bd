"""The demo consortium's public schema file: column types, GROUP BY domains and quantile grids.

Everything here is public knowledge about the common data model (which wards exist, which ICD-10
categories are coded, which quarters the study covers), never data. GROUP BY enumerates a key's
domain, so every value any site holds must be listed; ``demo_schema_toml`` derives the lists from
the generator's own constants so that the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from site_agent.tomlfile import toml_key, toml_str

from .data import (
    _CHRONIC_CODES,
    _COHORTS,
    _OUTPATIENT,
    CONDITIONS,
    DEFAULT_SITES,
    STUDY_END,
    STUDY_START,
    TABLE_SCHEMAS,
    WARDS,
    site_profile,
)

_TYPES = {"VARCHAR": "text", "INTEGER": "integer", "DOUBLE": "float", "BOOLEAN": "boolean", "DATE": "date"}
_TYPES["TIMESTAMP"] = "timestamp"

GRIDS: Mapping[str, tuple[float, float, float]] = {
    "patients.age": (0, 110, 1),
    "patients.birth_year": (1900, 2010, 1),
    "patients.bmi": (10, 70, 0.1),
    "admissions.age": (0, 110, 1),
    "admissions.length_of_stay": (0, 365, 1),
    "labs.value": (0, 1000, 0.1),
    "survival.age": (0, 110, 1),
    "survival.time_days": (0, 2000, 1),
}
"""Quantile grids ``[lo, hi, step]``: values are clamped to [lo, hi] and rounded to the step."""


def quarters() -> list[str]:
    """Every calendar quarter of the study, ``'2019-Q1'`` to ``'2023-Q4'``."""
    first, last = STUDY_START.astype(object).year, STUDY_END.astype(object).year
    return [f"{year}-Q{q}" for year in range(first, last + 1) for q in range(1, 5)]


def domains(sites: Sequence[str] = DEFAULT_SITES) -> dict[str, list[str] | list[int]]:
    """Public GROUP BY domains of the demo tables (booleans get ``[false, true]`` by default)."""
    primary = [c.code for c in CONDITIONS]
    coded = sorted({*primary, *_OUTPATIENT, *_CHRONIC_CODES.values()})
    return {
        "patients.sex": ["F", "M"],
        "patients.region": [d for site in sites for d in site_profile(site).districts],
        "admissions.ward": list(WARDS),
        "admissions.primary_dx": primary,
        "admissions.period": quarters(),
        "diagnoses.icd10": coded,
        "labs.test": ["hba1c", "creatinine", "ldl", "crp", "hb"],
        "labs.unit": ["mmol/mol", "umol/L", "mmol/L", "mg/L", "g/L"],
        "survival.cohort": list(_COHORTS),
        "survival.sex": ["F", "M"],
        "survival.treatment": ["standard", "new"],
        "survival.stage": [1, 2, 3, 4],
    }


def _value(v: str | int | float) -> str:
    return toml_str(v) if isinstance(v, str) else repr(v)


PERSON = "patient_id"
"""Every demo table's privacy unit: the patient (cell sizes count patients, joins follow them)."""


def demo_schema_toml(sites: Sequence[str] = DEFAULT_SITES) -> str:
    """The text of ``schema.toml`` for a demo consortium of ``sites``."""
    keys = domains(sites)
    lines = ["# Common schema of the demo consortium (public): types, GROUP BY domains, quantile grids."]
    for table, columns in TABLE_SCHEMAS.items():
        lines += ["", f"[tables.{toml_key(table)}]"]
        for name, column in columns.items():
            spec = [f"type = {toml_str(_TYPES[column.sql_type])}"]
            if f"{table}.{name}" in keys:
                spec.append(f"domain = [{', '.join(_value(v) for v in keys[f'{table}.{name}'])}]")
            if f"{table}.{name}" in GRIDS:
                spec.append(f"grid = [{', '.join(_value(v) for v in GRIDS[f'{table}.{name}'])}]")
            if name == PERSON:
                spec.append("person = true")
            lines.append(f"{toml_key(name)} = {{ {', '.join(spec)} }}")
    return "\n".join(lines) + "\n"
