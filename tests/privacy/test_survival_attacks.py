"""Attacks on KAPLAN_MEIER, in the attacker's arithmetic, against three real agents (k = 5).

The target is a lung patient alone in their age, sex and institution who died at a day the
attacker wants; the attacker writes WHERE, BY and AT to make a step of a curve hold that patient
alone, then reads the event time off what is released. Each test asserts that the value so
derived is not the patient's event time (or that it cannot be derived at all).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from site_agent.models.kaplan_meier import KaplanMeier

from ..integration.conftest import Running
from .conftest import Target, forget

T = "age = 46 AND sex = 1 AND inst = 21"


@pytest.fixture
def lung_target(open_lung: Running) -> Iterator[Target]:
    pooled = open_lung.pooled
    mask = (pooled.age == 46) & (pooled.sex == 1) & (pooled.inst == 21)
    target = Target(open_lung, "lung", T, "time", mask)
    assert target.row["status"] == 2 and target.row["time"] == 320  # alone, died on day 320
    yield target
    forget(open_lung)  # the curves' groups stay out of later tests' ledgers


def test_gbsg2_where_keeps_the_target_alone_before_late_patients(gbsg2: Running) -> None:
    """GBSG2: a patient alone in age, tumour size and grade who relapsed on day 98; WHERE T OR
    time > 1800 makes them the only event before day 1800."""
    forget(gbsg2)
    pooled = gbsg2.pooled
    where = "age = 57 AND tsize = 50 AND tgrade = 'III'"
    target = Target(gbsg2, "gbsg2", where, "time", (pooled.age == 57) & (pooled.tsize == 50) & (pooled.tgrade == "III"))
    assert target.row["cens"] == 1 and target.row["time"] == 98
    out = target.ask("KAPLAN_MEIER time, cens FROM gbsg2 WHERE {T} OR time > 1800")
    derived = first_event_time(out)
    assert derived != 98.0
    assert out is not None and derived is not None and derived > 1800
    forget(gbsg2)


def first_event_time(frame: pd.DataFrame | None, **group: object) -> float | None:
    """The attacker's reading: the end of the first released step with an event, None if the
    group has no curve (or the query released nothing)."""
    if frame is None:
        return None
    info = next((g for g in frame.attrs["groups"] if all(g.get(c) == v for c, v in group.items())), None)
    if info is None or not info["curve"]:
        return None
    table = KaplanMeier(frame, **group).event_table
    hits = table.index[table["observed"] > 0]
    return float(hits[0]) if len(hits) else None


def test_where_keeps_the_target_alone_before_late_survivors(lung_target: Target) -> None:
    """WHERE T OR time > 700: the target is the only death before day 700, so the first step
    with an event would be the target's day. The step holds 5 events or more: it ends later."""
    truth = float(lung_target.row["time"])
    out = lung_target.ask("KAPLAN_MEIER time, status = 2 FROM lung WHERE {T} OR time > 700 AT 0 TO 1100 STEP 1")
    derived = first_event_time(out)
    assert derived != truth
    assert out is not None and derived is not None and derived > 700  # merged with the late deaths


def test_at_times_bracket_the_target(lung_target: Target) -> None:
    """AT 319, 320, 1100 around the target's day: a step (319, 320] would hold the target alone.
    The steps are merged on shares, so no released step ends at 320 with one event."""
    truth = float(lung_target.row["time"])
    out = lung_target.ask("KAPLAN_MEIER time, status = 2 FROM lung WHERE {T} OR time > 700 AT 319, 320, 1100")
    assert first_event_time(out) != truth
    assert out is not None
    table = KaplanMeier(out).event_table
    assert not ((table.index == truth) & (table["observed"] == 1)).any()


def test_by_isolates_the_target_then_the_whole_cohort(lung_target: Target) -> None:
    """BY a CASE key that puts the target in a group alone: that group has no curve. The attacker
    then asks for everybody and subtracts the 'rest' curve's events step by step; the release
    ledger withholds the second curve (its group differs from 'rest' by one person)."""
    truth = float(lung_target.row["time"])
    key = "CASE WHEN {T} THEN 'target' ELSE 'rest' END"
    by = lung_target.ask(f"KAPLAN_MEIER time, status = 2 BY {key} FROM lung AT 0 TO 1100 STEP 1")
    assert by is not None
    assert first_event_time(by, **{by.attrs["by"][0]: "target"}) is None
    rest = KaplanMeier(by, **{by.attrs["by"][0]: "rest"}).event_table
    everyone = lung_target.ask("KAPLAN_MEIER time, status = 2 FROM lung AT 0 TO 1100 STEP 1")
    assert everyone is not None
    assert not everyone.attrs["groups"][0]["curve"] and everyone.attrs["groups"][0]["n"] == "<5"
    derived = None
    if everyone.attrs["groups"][0]["curve"]:  # the attacker's subtraction, were the curve released
        whole = KaplanMeier(everyone).event_table
        both = whole["observed"].sub(rest["observed"], fill_value=0)
        derived = float(both.index[np.flatnonzero(both.to_numpy() != 0)[0]])
    assert derived != truth
