"""CohortExplorer: choices -> query text -> one debounced run on a real (in-process) consortium."""

from collections.abc import Callable

import pandas as pd
import pytest
import traitlets

from mpc_jupyter.widgets import CohortExplorer
from site_agent.query.catalog import Schema

from .conftest import ManualClock


@pytest.fixture
def sent() -> list[str]:
    return []


@pytest.fixture
def explorer(
    schema: Schema, run_query: Callable[[str], pd.DataFrame], clock: ManualClock, sent: list[str]
) -> CohortExplorer:
    def run(text: str) -> pd.DataFrame:
        sent.append(text)
        return run_query(text)

    return CohortExplorer(schema, run, table="patients", clock=clock, debounce=0.3)


def test_a_burst_of_changes_runs_one_query(explorer: CohortExplorer, clock: ManualClock, sent: list[str]) -> None:
    clock.advance(1)  # the initial query
    assert len(sent) == 1 and sent[0] == 'SELECT COUNT(*) AS "n"\nFROM "patients"'
    explorer.group_by = ["sex"]
    clock.advance(0.1)
    explorer.group_by = ["sex", "smoker"]
    clock.advance(0.1)
    explorer.measure = "avg"
    explorer.column = "age"
    clock.advance(0.2)
    assert len(sent) == 1 and explorer.pending
    clock.advance(0.2)
    assert len(sent) == 2 and explorer.runs == 2 and not explorer.pending
    assert sent[1] == explorer.query_text
    assert 'GROUP BY "sex", "smoker"' in sent[1] and 'AVG("age") AS "avg_age"' in sent[1]
    assert list(explorer.result.columns) == ["sex", "smoker", "n", "avg_age"] and len(explorer.result) == 4


def test_controls_drive_the_traits(explorer: CohortExplorer, clock: ManualClock, sent: list[str]) -> None:
    explorer.table_box.value = "admissions"
    explorer.group_box.value = ("ward",)
    explorer.filter_column_box.value = "period"
    explorer.filter_values_box.value = ("2021-Q1", "2021-Q2")
    explorer.measure_box.value = "proportion"
    explorer.column_box.value = "adverse_event"
    assert explorer.table == "admissions" and explorer.group_by == ["ward"]
    assert explorer.filters == {"period": ["2021-Q1", "2021-Q2"]}
    assert (explorer.measure, explorer.column) == ("proportion", "adverse_event")
    clock.advance(1)
    assert len(sent) == 1 and "WHERE \"period\" IN ('2021-Q1', '2021-Q2')" in sent[0]
    assert {"proportion_adverse_event_ci_low", "proportion_adverse_event_ci_high"} <= set(explorer.result.columns)
    explorer.filter_values_box.value = ()
    assert explorer.filters == {}


def test_suppressed_cells_are_shown(explorer: CohortExplorer, clock: ManualClock, sites: dict) -> None:
    explorer.table = "admissions"
    explorer.group_by = ["primary_dx"]
    explorer.filters = {"ward": ["icu"]}
    clock.advance(1)
    result = explorer.result.set_index("primary_dx")
    pooled = pd.concat([con.execute("SELECT * FROM admissions WHERE ward = 'icu'").df() for con in sites.values()])
    assert result.loc["A39", "n"] == (pooled.primary_dx == "A39").sum() >= 6  # reportable only pooled
    assert ((result.n == "<5") | (result.n == 0)).sum() > 20  # codes rarely (<5) or never (0) in intensive care
    rare = int((pooled.primary_dx == "I80").sum())
    assert rare < 5 and result.loc["I80", "n"] == ("<5" if rare else 0)
    assert 'class="mpc-suppressed"' in explorer.result_box.value
    assert "cells suppressed" in explorer.status_box.value


def test_switching_tables_keeps_only_valid_choices(explorer: CohortExplorer, clock: ManualClock) -> None:
    explorer.group_by = ["sex", "region"]
    explorer.measure = "median"
    explorer.column_box.value = "bmi"
    assert explorer.column == "bmi"
    explorer.table = "labs"
    assert explorer.group_by == [] and explorer.column == "value"
    assert list(explorer.group_box.options) == ["test", "unit"]
    explorer.group_by = ["test"]
    clock.advance(1)
    assert list(explorer.result.test) == ["hba1c", "creatinine", "ldl", "crp", "hb"]


def test_invalid_choices_are_refused(explorer: CohortExplorer, clock: ManualClock, sent: list[str]) -> None:
    with pytest.raises(traitlets.TraitError):
        explorer.group_by = ["bmi"]
    with pytest.raises(traitlets.TraitError):
        explorer.table = "secrets"
    with pytest.raises(traitlets.TraitError):
        explorer.debounce = -1
    clock.advance(1)
    sent.clear()
    explorer.filters = {"region": ["XX9"]}
    clock.advance(1)
    assert sent == [] and "from its domain" in explorer.error


def test_a_refusal_is_shown_and_exploring_goes_on(schema: Schema, clock: ManualClock) -> None:
    def refuse(text: str) -> pd.DataFrame:
        raise RuntimeError("site north refused the query: max_groups")

    explorer = CohortExplorer(schema, refuse, table="patients", clock=clock)
    clock.advance(1)
    assert "max_groups" in explorer.error and "max_groups" in explorer.status_box.value and explorer.result is None
