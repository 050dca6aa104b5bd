"""Attacks on VALIDATE LOGISTIC in the attacker's arithmetic (in process, k = 5).

The target is lung's only patient with ECOG grade 3 (age 70, male, status 2 = dead). Each
attack is run in two worlds that differ only in the target's outcome (dead, alive): the
attacker derives the outcome from what is released only if the releases differ. Each test
asserts that they are identical (so no arithmetic on them can tell the outcome), and that
what a naive release would have shown does tell it (the attack is real, the test can fail).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_lung

from site_agent.errors import ModelRefused
from site_agent.models.statement import execute
from site_agent.query import DisclosureRules, compile_query

from ..models.conftest import split

MODEL = "1.2 + 0.01*age - 0.5*C(sex)[2] + 0.3*ph_ecog"
TARGET = "age = 70 AND sex = 1 AND ph_ecog = 3"


def _world(dead: bool) -> tuple[dict, object, pd.DataFrame]:
    lung = load_lung().rename(columns=lambda c: c.replace(".", "_")).dropna(subset=["inst"]).reset_index(drop=True)
    lung["status"] += 1
    lung["id"] = range(len(lung))
    target = lung.ph_ecog == 3
    assert target.sum() == 1
    lung.loc[target, "status"] = 2 if dead else 1
    cons, schema = split(lung, "lung", {"lung.sex": [1, 2], "lung.ph_ecog": [0, 1, 2, 3]}, "id")
    return cons, schema, lung


@pytest.fixture(scope="module")
def worlds() -> list[tuple[dict, object, pd.DataFrame]]:
    return [_world(True), _world(False)]


def _released(worlds, text: str) -> list[pd.DataFrame]:
    return [execute(compile_query(text, schema, DisclosureRules()), cons) for cons, schema, _ in worlds]


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal up to the protocol's own rounding (random in the last bits of a division, 1e-9);
    one person's outcome moves the AUC by 1/(P N) > 1e-5 and n * Brier by > 0.1 here."""
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-7, atol=1e-8)


def test_where_keeping_the_target_alone_releases_nothing(worlds) -> None:
    dead, alive = _released(worlds, f"VALIDATE LOGISTIC status = 2 ~ {MODEL} FROM lung WHERE {TARGET}")
    _same(dead, alive)
    assert not dead.loc["all", "released"] and dead.drop(columns="released").isna().all(axis=None)


def test_where_with_known_others_releases_nothing(worlds) -> None:
    """The target and the six patients under 44 (one dead), whose outcomes the attacker knows:
    7 persons, but fewer than 5 events in either world, so the group is withheld."""
    where = f"({TARGET}) OR age < 44"
    dead, alive = _released(worlds, f"VALIDATE LOGISTIC status = 2 ~ {MODEL} FROM lung WHERE {where}")
    _same(dead, alive)
    assert not dead.loc["all", "released"]


def test_by_a_level_held_by_the_target_alone(worlds) -> None:
    """BY ph_ecog: grade 3 is the target alone. Its group is withheld, the others do not hold
    the target, and no overall row is released beside the groups (the overall minus the
    released groups would be the target)."""
    dead, alive = _released(worlds, f"VALIDATE LOGISTIC status = 2 ~ {MODEL} FROM lung BY ph_ecog")
    _same(dead, alive)
    assert not dead.loc[3, "released"] and list(dead.index) == [0, 1, 2, 3]
    assert dead.loc[[0, 1, 2], "released"].all()


def test_the_attack_is_real_without_the_rule(worlds) -> None:
    """What the attacker would read if the target's group were released: n * Brier differs by
    (1 - p)^2 - p^2 between the worlds (the local sums, in the clear)."""
    sums = []
    for _, _, lung in worlds:
        rows = lung[lung.ph_ecog == 3]
        eta = 1.2 + 0.01 * rows.age - 0.5 * (rows.sex == 2) + 0.3 * rows.ph_ecog
        p = 1 / (1 + np.exp(-eta))
        sums.append(float((((rows.status == 2) * 1.0 - p) ** 2).sum()))
    assert abs(sums[0] - sums[1]) > 0.1


def test_confusion_cells_are_withheld_together(worlds) -> None:
    """A threshold that puts few patients on one side: a cell in 1..k-1 withholds all four
    (a lone withheld cell would follow from the released margins n and events)."""
    out = _released(worlds[:1], f"VALIDATE LOGISTIC status = 2 ~ {MODEL} FROM lung THRESHOLD 0.93")[0]
    _, _, lung = worlds[0]
    rows = lung.dropna(subset=["ph_ecog"])
    eta = 1.2 + 0.01 * rows.age - 0.5 * (rows.sex == 2) + 0.3 * rows.ph_ecog
    high = (1 / (1 + np.exp(-eta))) >= 0.93
    assert high.sum() == 1  # one predicted positive: TP or FP would be 1
    assert out.loc["all", "released"] and out.loc["all", ["tp", "fp", "fn", "tn"]].isna().all()


def test_a_score_that_singles_the_target_out_is_refused(worlds) -> None:
    """Score 100 for the target, 0 for everyone else: the AUC would be 1/2 + 1/(2P) if the
    target died and 1/2 - 1/(2N) if not. The term is non-zero at one person: refused in both
    worlds, and nothing is released."""
    text = f"VALIDATE LOGISTIC status = 2 ~ 0 + 100*I({TARGET}) FROM lung"
    for cons, schema, _ in worlds:
        with pytest.raises(ModelRefused, match="term_isolation"):
            execute(compile_query(text, schema, DisclosureRules()), cons)


def test_a_tree_whose_leaf_holds_the_target_alone_is_refused(worlds) -> None:
    """TREES(:model): a leaf is a term of the score. A tree that sends the target alone to a
    high leaf ranks them above everyone: refused in both worlds; with k = 1 (no rule) the AUC
    tells the outcome."""
    tree = {"nodeid": 0, "split": "ph_ecog", "split_condition": 2.5, "yes": 1, "no": 2, "missing": 1,
            "children": [{"nodeid": 1, "leaf": 0.0}, {"nodeid": 2, "leaf": 5.0}]}
    params = {"model": {"format": "xgboost", "base_score": 0.5, "trees": [tree]}}
    text = "VALIDATE LOGISTIC status = 2 ~ TREES(:model) FROM lung WITHOUT CALIBRATION"
    for cons, schema, _ in worlds:
        with pytest.raises(ModelRefused, match="term_isolation"):
            execute(compile_query(text, schema, DisclosureRules(), params=params), cons)
    naive = [
        execute(compile_query(text, schema, DisclosureRules(min_cell_size=1), params=params), cons)
        for cons, schema, _ in worlds
    ]
    assert abs(naive[0].loc["all", "auc"] - naive[1].loc["all", "auc"]) > 1e-4
