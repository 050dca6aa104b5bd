"""The model ledger's steps in one process: each site's membership query on DuckDB, its
differences with the sets in its own ledger folder, and the committee's check on the pooled
shares (:class:`site_agent.agent.models.ModelCompiled`), as the agent runs them. Difference
sizes are compared with pandas on the rows; a fit that passes is compared with statsmodels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from lifelines import CoxPHFitter
from lifelines.datasets import load_lung

from site_agent.agent.models import LEDGER_RULE, ModelCompiled
from site_agent.mpc.arithmetic import input_all
from site_agent.mpc.party import Party, run_in_memory
from site_agent.privacy.ledger import Ledger
from site_agent.query import DisclosureRules, compile_query
from site_agent.query.catalog import schema_from_duckdb
from site_agent.query.membership import membership

from ..models.conftest import relative, split

TARGET = "age = 74 AND sex = 1 AND inst = 12"
GRIDS = {"lung.time": (0.0, 1100.0, 1.0), "lung.age": (30.0, 90.0, 1.0)}


@pytest.fixture(scope="module")
def lung() -> tuple[dict[str, Any], Any, pd.DataFrame]:
    frame = load_lung().rename(columns=lambda c: c.replace(".", "_")).dropna(subset=["inst"]).reset_index(drop=True)
    frame["id"] = range(len(frame))
    cons, _ = split(frame, "lung")
    schema = schema_from_duckdb(cons["site0"], {"lung.sex": [1, 2]}, GRIDS, {"lung": "id"})
    return cons, schema, frame


def _sites(tmp_path: Path, lung, remembered: str, asked: str, failed: int | None = None) -> dict[str, Any]:
    """Remember ``remembered`` at every site, then run ``asked``'s committee program on each
    site's differences (site ``failed``'s ledger query failing); the first member's meta."""
    cons, schema, _ = lung
    rules = DisclosureRules()
    first, plan = (compile_query(q, schema, rules) for q in (remembered, asked))
    local, differences = [], []
    for i, con in enumerate(cons.values()):
        ledger = Ledger(tmp_path / f"site{i}")
        ledger.record("ana", "a" * 32, membership(first, con, None), np.ones((1, 1), dtype=bool))
        diff = ledger.differences("ana", membership(plan, con, None))
        differences.append(int(diff.sum()))
        compiled = ModelCompiled(plan)
        vector = compiled.failed_vector() if i == failed else compiled.local_inputs(con)
        local.append((compiled, np.concatenate([vector, diff.reshape(-1).astype(np.uint64)])))
    size = local[0][1].size

    def program(p: Party):
        inputs = yield from input_all(p, local[p.index][1], (size, size, size))
        return (yield from local[p.index][0].program(p, inputs, 1))

    results, _ = run_in_memory(program, seed=3)
    meta = dict(results[0][1])
    meta["differences"] = sum(differences)
    meta["frame"] = (
        None
        if meta.get("refused") or meta.get("local_failed")
        else local[0][0].model.assemble(results[0][1], [r[0] for r in results])
    )
    return meta


def test_one_patient_fewer_is_refused(tmp_path: Path, lung) -> None:
    meta = _sites(
        tmp_path,
        lung,
        "LINEAR time ~ age FROM lung WHERE sex = 1",
        f"LINEAR time ~ age FROM lung WHERE sex = 1 AND NOT ({TARGET})",
    )
    assert meta["differences"] == 1 and meta["refused"] == LEDGER_RULE and meta["frame"] is None


def test_a_failing_ledger_query_fails_the_model(tmp_path: Path, lung) -> None:
    meta = _sites(tmp_path, lung, "LINEAR time ~ age FROM lung", "LINEAR time ~ age FROM lung", failed=1)
    assert meta.get("local_failed") and meta["frame"] is None


def test_a_set_differing_by_k_or_more_is_fitted(tmp_path: Path, lung) -> None:
    _, _, frame = lung
    meta = _sites(
        tmp_path,
        lung,
        "LINEAR time ~ age FROM lung WHERE ph_karno >= 60",
        "LINEAR time ~ age FROM lung WHERE ph_karno >= 80",
    )
    assert meta["differences"] == int(((frame.ph_karno >= 60) & (frame.ph_karno < 80)).sum()) >= 5
    ref = smf.ols("time ~ age", frame[frame.ph_karno >= 80]).fit()
    assert relative(meta["frame"]["coef"], ref.params) < 1e-8


# Two fits over the same WHERE set whose complete cases differ by the target alone: the response
# is NULL for 5 other men (age > 75) in the first, and for those and the target in the second, so
# each drops 0 or >= k rows (the model rule within one statement) and the WHERE sets are equal.
DROPPED = "LINEAR CASE WHEN age > 75{} THEN NULL ELSE time END ~ age FROM lung WHERE sex = 1"
ALL_BUT_OTHERS, ALL_BUT_TARGET = DROPPED.format(""), DROPPED.format(f" OR ({TARGET})")


def _sum_of_response(frame: pd.DataFrame | None) -> float | None:
    """The attacker's arithmetic on a released LINEAR y ~ x: X'X = [[n, S], [S, Q]] from n and the
    diagonal of its inverse (std err^2 / scale = Q / det, n / det; S = sqrt(n Q - det), ages > 0),
    then sum y = (X'X beta)_0 = n b0 + S b1 (None: nothing released)."""
    if frame is None:
        return None
    n, scale = frame.attrs["n"], frame.attrs["scale"]
    d0, d1 = (frame["std err"].to_numpy() ** 2) / scale
    det = n / d1
    s = np.sqrt(n * d0 * det - det)
    b0, b1 = frame["coef"].to_numpy()
    return float(n * b0 + s * b1)


def test_complete_cases_differing_by_the_target_alone_leak_its_outcome(tmp_path: Path, lung) -> None:
    """What the two fits would give if both were released (each checked against its own set
    only): the difference of their sums of the response is the target's survival time."""
    _, _, frame = lung
    men = frame[frame.sex == 1]
    target = men[(men.age == 74) & (men.inst == 12)].time.item()
    first = _sites(tmp_path / "a", lung, ALL_BUT_OTHERS, ALL_BUT_OTHERS)["frame"]
    second = _sites(tmp_path / "b", lung, ALL_BUT_TARGET, ALL_BUT_TARGET)["frame"]
    assert first is not None and second is not None
    assert first.attrs["n"] - second.attrs["n"] == 1
    assert abs(_sum_of_response(first) - men[men.age <= 75].time.sum()) < 1e-3  # the arithmetic is right
    assert abs(_sum_of_response(first) - _sum_of_response(second) - target) < 0.01


def test_complete_cases_differing_by_the_target_alone_are_refused(tmp_path: Path, lung) -> None:
    """The model's ledger set is its complete cases, not its WHERE set: the second fit differs
    from the first by one person and releases nothing, so the attacker derives nothing."""
    first = _sites(tmp_path / "a", lung, ALL_BUT_OTHERS, ALL_BUT_OTHERS)
    meta = _sites(tmp_path / "b", lung, ALL_BUT_OTHERS, ALL_BUT_TARGET)
    assert first["differences"] == 0 and first["frame"] is not None
    assert meta["differences"] == 1 and meta["refused"] == LEDGER_RULE and meta["frame"] is None
    assert _sum_of_response(meta["frame"]) is None


STRATIFIED = "COX time, status ~ age FROM lung{} STRATA sex"  # status: 1 dead (lifelines)


def test_a_stratum_one_patient_off_a_released_set_is_refused(tmp_path: Path, lung) -> None:
    """With STRATA each stratum's persons are a query set too: the men of a stratified fit
    without the target are the released men minus one, so nothing is released."""
    meta = _sites(
        tmp_path, lung, "LINEAR time ~ age FROM lung WHERE sex = 1", STRATIFIED.format(f" WHERE NOT ({TARGET})")
    )
    assert meta["refused"] == LEDGER_RULE and meta["frame"] is None


def test_a_stratified_fit_checks_and_remembers_its_whole_set_and_each_stratum(tmp_path: Path, lung) -> None:
    """Three sets (all complete cases, the men's, the women's), each compared with the remembered
    whole set (0, the women, the men differ): none by 1 to k-1, so the fit is released, as
    lifelines fits it on the pooled rows."""
    _, _, frame = lung
    plan = compile_query(STRATIFIED.format(""), lung[1], DisclosureRules())
    assert plan.data["ledger"]["sets"] == 3
    meta = _sites(tmp_path, lung, STRATIFIED.format(""), STRATIFIED.format(""))
    assert meta["differences"] == int((frame.sex == 2).sum() + (frame.sex == 1).sum())
    ref = CoxPHFitter().fit(frame[["time", "status", "age", "sex"]], "time", "status", strata=["sex"])
    assert relative(meta["frame"]["coef"], ref.params_) < 1e-5


VALIDATED = (
    "VALIDATE LOGISTIC CASE WHEN age > 75{} THEN NULL ELSE status END ~ -0.5 + 0.01*age FROM lung WHERE sex = 1"
)


def test_validate_whose_scored_rows_differ_by_the_target_alone_is_refused(tmp_path: Path, lung) -> None:
    """VALIDATE's query set is its scored rows: with the target's response made NULL in the second
    statement only, n x Brier of the two would give the target's squared error; the second
    differs by one person from the first and releases nothing."""
    first = _sites(tmp_path / "a", lung, VALIDATED.format(""), VALIDATED.format(""))
    meta = _sites(tmp_path / "b", lung, VALIDATED.format(""), VALIDATED.format(f" OR ({TARGET})"))
    assert first["differences"] == 0 and first["frame"] is not None
    assert meta["differences"] == 1 and meta["refused"] == LEDGER_RULE and meta["frame"] is None


GRADIENT = (
    "GRADIENT LOGISTIC CASE WHEN age > 75{} THEN NULL ELSE status END ~ age FROM lung WHERE sex = 1 AT (-0.5, 0.01)"
)


def test_gradients_whose_rows_differ_by_the_target_alone_are_refused(tmp_path: Path, lung) -> None:
    """GRADIENT's query set is the rows it sums: two gradients whose rows differ by the target
    (its response made NULL in the second) would give its x (y - p); the second releases nothing."""
    first = _sites(tmp_path / "a", lung, GRADIENT.format(""), GRADIENT.format(""))
    meta = _sites(tmp_path / "b", lung, GRADIENT.format(""), GRADIENT.format(f" OR ({TARGET})"))
    assert first["differences"] == 0 and first["frame"] is not None
    assert meta["differences"] == 1 and meta["refused"] == LEDGER_RULE and meta["frame"] is None
