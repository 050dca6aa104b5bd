"""Differences across queries for model statements (issue 9, family 8; issue 11): a model's
FROM/WHERE persons enter the analyst's release ledger like an aggregate's query sets.

Three real agents (the session's ``lung`` consortium of the attacks, k = 5). The attacker fits
a model on ``WHERE sex = 1``, then on the same set without one patient (a 74-year-old man of
institution 12, censored), and does the arithmetic on what the two fits release. References
are pandas and statsmodels on the pooled rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy.stats import mannwhitneyu

from mpc_jupyter.client import QueryFailed

from ..integration.conftest import Running
from ..models.conftest import relative
from .conftest import K, derive, forget, value

TARGET = "age = 74 AND sex = 1 AND inst = 12"
SCORE = "1.2 + 0.01*age - 0.5*C(sex)[2] + 0.3*ph_ecog"


@pytest.fixture(autouse=True)
def fresh(lung: Running) -> Iterator[None]:
    """Each test starts with empty ledgers and leaves them so (the consortium is shared)."""
    forget(lung)
    yield
    forget(lung)


def _target(pooled: pd.DataFrame) -> pd.Series:
    rows = pooled[(pooled.age == 74) & (pooled.sex == 1) & (pooled.inst == 12)]
    assert len(rows) == 1
    return rows.iloc[0]


def _p(rows: pd.DataFrame | pd.Series) -> object:
    """The public score's predicted probability (the attacker knows the target's covariates)."""
    return 1 / (1 + np.exp(-(1.2 + 0.01 * rows.age - 0.5 * (rows.sex == 2) + 0.3 * rows.ph_ecog)))


def _n_brier(frame: pd.DataFrame | None) -> float | None:
    """n x Brier of a VALIDATE result as the attacker reads it (None: nothing released)."""
    if frame is None:
        return None
    n, brier = value(frame, "n"), value(frame, "brier")
    return None if n is None or brier is None else n * brier


def _outcome(difference: float | None, p: float) -> int | None:
    """The attacker's guess of the target's outcome from n Brier(S) - n Brier(S - target) =
    (y - p)^2: the y in {0, 1} that fits."""
    if difference is None:
        return None
    return int(np.argmin([abs(difference - (y - p) ** 2) for y in (0, 1)]))


def _ask(lung: Running, text: str) -> pd.DataFrame | None:
    try:
        return lung.client.query(text)
    except QueryFailed as err:
        assert err.rule == "ledger_difference" and "\n" not in str(err)
        return None


def test_differencing_two_validations_gives_nothing(lung: Running) -> None:
    pooled, target = lung.pooled, _target(lung.pooled)
    first = _ask(lung, f"VALIDATE LOGISTIC status = 2 ~ {SCORE} FROM lung WHERE sex = 1")
    second = _ask(lung, f"VALIDATE LOGISTIC status = 2 ~ {SCORE} FROM lung WHERE sex = 1 AND NOT ({TARGET})")
    assert first is not None and _n_brier(first) is not None  # the honest first fit answers
    assert second is None  # refused, at every member: nothing released
    truth = int(target.status == 2)
    stolen = _outcome(derive(_n_brier(first), _n_brier(second), sign=(1, -1)), float(_p(target)))
    assert stolen is None or stolen != truth
    # the attack is real: the second fit's n Brier (pandas on the pooled rows) gives the outcome away
    rest = pooled[(pooled.sex == 1) & ~((pooled.age == 74) & (pooled.inst == 12))].dropna(subset=["ph_ecog"])
    naive = float((((rest.status == 2) * 1.0 - _p(rest)) ** 2).sum())
    assert _outcome(derive(_n_brier(first), naive, sign=(1, -1)), float(_p(target))) == truth


def test_differencing_two_validations_by_sex_gives_nothing(lung: Running) -> None:
    """VALIDATE's BY groups are query sets of their own: the sex-1 group of a second BY statement,
    one patient fewer, is not released, so n x Brier of the two sex-1 groups gives nothing away."""
    pooled, target = lung.pooled, _target(lung.pooled)
    text = f"VALIDATE LOGISTIC status = 2 ~ {SCORE} FROM lung {{}}BY sex WITHOUT CALIBRATION"
    first = _ask(lung, text.format(""))
    assert first is not None and list(first.index) == [1, 2] and bool(first["released"].all())
    second = _ask(lung, text.format(f"WHERE NOT ({TARGET}) "))
    sex1 = None if second is None else _n_brier(second.loc[[1]])
    assert sex1 is None  # refused, or the sex-1 group withheld
    truth = int(target.status == 2)
    stolen = _outcome(derive(_n_brier(first.loc[[1]]), sex1, sign=(1, -1)), float(_p(target)))
    assert stolen is None or stolen != truth
    # the attack is real: the sex-1 group without the target (pandas) gives the outcome away
    rest = pooled[(pooled.sex == 1) & ~((pooled.age == 74) & (pooled.inst == 12))].dropna(subset=["ph_ecog"])
    naive = float((((rest.status == 2) * 1.0 - _p(rest)) ** 2).sum())
    assert _outcome(derive(_n_brier(first.loc[[1]]), naive, sign=(1, -1)), float(_p(target))) == truth


def test_a_validation_after_its_by_groups_is_checked_against_each(lung: Running) -> None:
    """A group released by a BY statement is remembered: the same model WHERE sex = 1 without
    the target (no BY) differs from it by one patient and is refused."""
    assert _ask(lung, f"VALIDATE LOGISTIC status = 2 ~ {SCORE} FROM lung BY sex WITHOUT CALIBRATION") is not None
    text = f"VALIDATE LOGISTIC status = 2 ~ {SCORE} FROM lung WHERE sex = 1 AND NOT ({TARGET}) WITHOUT CALIBRATION"
    assert _ask(lung, text) is None


def test_by_groups_after_a_validation_are_checked_against_it(lung: Running) -> None:
    """The other order: WHERE sex = 1 without BY, then BY sex without the target; the sex-1
    group differs from the first set by one patient and is not released."""
    target = _target(lung.pooled)
    first = _ask(lung, f"VALIDATE LOGISTIC status = 2 ~ {SCORE} FROM lung WHERE sex = 1 WITHOUT CALIBRATION")
    assert first is not None and _n_brier(first) is not None
    second = _ask(
        lung, f"VALIDATE LOGISTIC status = 2 ~ {SCORE} FROM lung WHERE NOT ({TARGET}) BY sex WITHOUT CALIBRATION"
    )
    sex1 = None if second is None else _n_brier(second.loc[[1]])
    stolen = _outcome(derive(_n_brier(first), sex1, sign=(1, -1)), float(_p(target)))
    assert sex1 is None and (stolen is None or stolen != int(target.status == 2))


def test_validations_by_sex_on_sets_differing_by_k_or_more_answer(lung: Running) -> None:
    pooled = lung.pooled
    for where in ("ph_karno >= 60", "ph_karno >= 80"):
        rows = pooled.query(where)
        for sex in (1, 2):  # each group differs from the other statement's by 0 or >= k persons
            wide, narrow = (
                pooled.query(f"ph_karno >= 60 and sex == {sex}"),
                pooled.query(f"ph_karno >= 80 and sex == {sex}"),
            )
            assert len(wide) - len(narrow) >= K
        out = lung.client.query(
            f"VALIDATE LOGISTIC status = 2 ~ {SCORE} FROM lung WHERE {where} BY sex WITHOUT CALIBRATION"
        )
        for sex in (1, 2):
            group = rows[rows.sex == sex].dropna(subset=["ph_ecog"])
            y, p = (group.status == 2).to_numpy(int), np.asarray(_p(group), dtype=float)
            eta = np.round((1.2 + 0.01 * group.age - 0.5 * (group.sex == 2) + 0.3 * group.ph_ecog).to_numpy(), 9)
            auc = mannwhitneyu(eta[y == 1], eta[y == 0]).statistic / (y.sum() * (1 - y).sum())
            row = out.loc[sex]
            assert row["n"] == len(y) and row["events"] == y.sum()
            assert abs(row["brier"] - float(np.mean((y - p) ** 2))) < 1e-6
            assert abs(row["citl"] - (y.mean() - p.mean())) < 1e-6
            assert abs(row["auc"] - auc) < 1e-6


def test_a_linear_fit_on_one_patient_fewer_is_refused_at_every_member(lung: Running) -> None:
    assert _ask(lung, "LINEAR time ~ age FROM lung WHERE sex = 1") is not None
    before = lung.audit_counts()
    assert _ask(lung, f"LINEAR time ~ age FROM lung WHERE sex = 1 AND NOT ({TARGET})") is None
    for site in ("north", "central", "south"):
        entry = lung.wait_audit(site, before[site])[-1]
        assert entry["decision"] == "refused" and entry["reveals"] == []


def test_explain_shows_the_ledger_query_and_reveal(lung: Running) -> None:
    text = lung.client.explain("LINEAR time ~ age FROM lung WHERE sex = 1")
    assert "[ledger] SELECT" in text and "[committee] ledger:" in text


def test_models_on_sets_differing_by_k_or_more_answer(lung: Running) -> None:
    pooled = lung.pooled
    wide, narrow = pooled[pooled.ph_karno >= 60], pooled[pooled.ph_karno >= 80]
    assert len(wide) - len(narrow) >= K
    for where, rows in (("ph_karno >= 60", wide), ("ph_karno >= 80", narrow), ("ph_karno >= 60", wide)):
        ours = lung.client.query(f"LINEAR wt_loss ~ age + C(sex) FROM lung WHERE {where}")
        ref = smf.ols("wt_loss ~ age + C(sex)", rows).fit()
        assert relative(ours["coef"], ref.params) < 1e-8
        assert relative(ours["std err"], ref.bse) < 1e-8


def test_an_aggregate_after_a_model_is_checked_against_its_set(lung: Running) -> None:
    assert _ask(lung, "LINEAR time ~ age FROM lung WHERE sex = 1") is not None
    out = lung.client.query(f"SELECT COUNT(*) AS n, SUM(time) AS s FROM lung WHERE sex = 1 AND NOT ({TARGET})")
    assert value(out, "n") is None and value(out, "s") is None  # suppressed: the pair would isolate one
    honest = lung.client.query("SELECT COUNT(*) AS n FROM lung WHERE sex = 1")  # the model's own set
    assert value(honest, "n") == (lung.pooled.sex == 1).sum()


def test_a_model_after_an_aggregate_is_checked_against_its_sets(lung: Running) -> None:
    first = lung.client.query("SELECT COUNT(*) AS n, SUM(time) AS s FROM lung WHERE sex = 1")
    assert value(first, "s") is not None
    assert _ask(lung, f"LINEAR time ~ age FROM lung WHERE sex = 1 AND NOT ({TARGET})") is None
