"""COX through three real agents (TLS websockets, DuckDB), against lifelines on the pooled lung
data. Its own consortium: the shared lung schema declares no time grid, which COX needs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from mpc_jupyter.client import QueryFailed

from ..lung import LUNG_SCHEMA, SITES, lung_by_site
from ..models.conftest import relative
from .conftest import Dataset, Running, start_retrying

GRIDDED = LUNG_SCHEMA.replace('time = "float"', 'time = { type = "float", grid = [0, 1100, 1] }')


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    assert GRIDDED != LUNG_SCHEMA
    running = start_retrying(tmp_path_factory.mktemp("cox"), {}, data=Dataset("lung", GRIDDED, lung_by_site))
    yield running
    running.close()


def test_efron_equals_lifelines_through_agents(timed: Running) -> None:
    ours = timed.client.query("COX time, status = 2 ~ age + C(sex) FROM lung")
    pooled = pd.concat(list(lung_by_site().values()), ignore_index=True)
    rows = pooled[["time", "age"]].assign(dead=(pooled.status == 2) * 1, female=(pooled.sex == 2) * 1)
    ref = CoxPHFitter().fit(rows, "time", "dead", fit_options={"precision": 1e-12})
    names = {"female": "C(sex)[T.2]"}
    assert relative(ours["coef"], ref.params_.rename(names)) < 1e-5
    assert relative(ours["se(coef)"], ref.standard_errors_.rename(names)) < 1e-5
    assert ours.attrs["llf"] == pytest.approx(ref.log_likelihood_, rel=1e-7)
    assert ours.attrs["concordance"] == pytest.approx(ref.concordance_index_, abs=1e-8)
    assert (ours.attrs["n"], ours.attrs["events"]) == (len(rows), int(rows.dead.sum()))
    assert len(ours.attrs["receipts"]) == 3
    for site in SITES:  # the audit log names the declared reveals, never values
        entry = timed.audit(site)[-1]
        assert entry["decision"] == "accepted"
        assert {r["name"] for r in entry["reveals"]} >= {"coef", "se", "iterate", "llf", "concordance"}


def test_explain_names_the_reveal_points(timed: Running) -> None:
    text = timed.client.explain("COX time, status = 2 ~ age FROM lung TIES BRESLOW")
    assert "BRESLOW" in text and "[committee] iterate:" in text and "[analyst] llf:" in text
    assert "[analyst] concordance:" in text and "risk bin" in text


def test_validate_cox_equals_lifelines_through_agents(timed: Running) -> None:
    """VALIDATE COX by sex: each group's C equals lifelines' concordance_index on its pooled rows;
    the groups enter the release ledger (a group one patient short is refused)."""
    text = "VALIDATE COX time, status = 2 ~ 0.017*age - 0.51*C(sex)[2] + 0.45*ph_ecog FROM lung BY sex"
    ours = timed.client.query(text)
    pooled = pd.concat(list(lung_by_site().values()), ignore_index=True).dropna(subset=["ph_ecog"])
    for sex, rows in pooled.groupby("sex"):
        eta = np.round((0.017 * rows.age - 0.51 * (rows.sex == 2) + 0.45 * rows.ph_ecog).to_numpy(), 9)
        assert ours.loc[sex, "concordance"] == pytest.approx(
            concordance_index(rows.time, -eta, rows.status == 2), abs=1e-8
        )
    everyone = pd.concat(list(lung_by_site().values()), ignore_index=True)
    unique = everyone.groupby(["age", "inst"]).filter(lambda g: len(g) == 1)
    patient = unique[unique.sex == 1].iloc[0]  # the only patient of their age at their institution
    without = f"FROM lung WHERE NOT (age = {int(patient.age)} AND inst = {int(patient.inst)}) BY"
    with pytest.raises(QueryFailed) as err:
        timed.client.query(text.replace("FROM lung BY", without))
    assert err.value.rule == "ledger_difference"
