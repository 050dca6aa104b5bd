"""Attack family 5, errors as oracles, against real agents (issue 9, deliverable 6).

The attacker holds valid analyst keys and targets one patient by quasi-identifiers only:
``T := age = 74 AND sex = 1 AND inst = 12`` (one patient, held at central). Each oracle query is
run twice: with ``T`` (target present) and with ``age = 75`` (nobody), and the attacker reads
the outcome: did it fail, what did it say, what does any audit log hold. The attacker's guess
"the target exists (and where)" must come out the same both ways.

What the released numbers of these queries say beyond the oracle (227 versus 228 rows of
``NOT T``, a conditional sum that is suppressed versus 0) is differencing and conditional sums,
attack families 1 and 8, not the oracle this file is about.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import QueryFailed
from mpc_jupyter.errors import usage_error
from site_agent.errors import LocalStepError

from ..integration.conftest import SITES, Dataset, Running, start_retrying
from ..lung import LUNG_SCHEMA, lung_by_site
from .conftest import forget

K = 5
SUPPRESSED = f"<{K}"
PRESENT, ABSENT = 74, 75


def target(age: int) -> str:
    return f"age = {age} AND sex = 1 AND inst = 12"


@dataclass
class Outcome:
    """Everything the attacker (and anyone reading the audit logs) learns from one query."""

    frame: pd.DataFrame | None
    message: str  # what the analyst is shown ("" when the query answered)
    audit: dict[str, list[dict[str, Any]]]  # each site's new audit entries

    @property
    def failed(self) -> bool:
        return self.frame is None

    @property
    def texts(self) -> list[str]:
        """Every text that could carry a site name or a value: the analyst's message, each reason."""
        return [self.message] + [str(e.get("reason", "")) for entries in self.audit.values() for e in entries]


def attempt(running: Running, text: str) -> Outcome:
    # Each run on its own: the release ledger (family 8) would withhold the second of two runs
    # that differ by the target, which is its job but not what these tests look at.
    forget(running)
    before = running.audit_counts()
    frame, message = None, ""
    try:
        frame = running.client.query(text)
    except QueryFailed as exc:
        message = str(usage_error(exc))
    audit = {site: running.wait_audit(site, before[site]) for site in SITES}
    assert all(len(entries) == 1 for entries in audit.values()), audit
    return Outcome(frame, message, audit)


def no_site_and_no_value(outcome: Outcome, values: list[float]) -> None:
    """No text names a site or quotes a number from the data (in any notation)."""
    for text in outcome.texts:
        assert not any(site in text for site in SITES), text
        assert "magnitude" not in text and not re.search(r"\de[+-]?\d", text), text
        numbers = {float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)}
        assert not numbers & set(values), text


def same_oracle(present: Outcome, absent: Outcome) -> None:
    """The attacker's guess from the oracle (failure, its text, the audit's decision) is equal."""
    assert present.failed == absent.failed
    assert present.message == absent.message
    for site in SITES:
        assert [e["decision"] for e in present.audit[site]] == [e["decision"] for e in absent.audit[site]]
        assert [e["reason"] for e in present.audit[site]] == [e["reason"] for e in absent.audit[site]]


@pytest.fixture(scope="module")
def truth() -> pd.Series:
    """The target's record, from the pooled plaintext (the attacker does not have it)."""
    pooled = pd.concat(list(lung_by_site().values()), ignore_index=True)

    def rows(age: int) -> pd.DataFrame:
        return pooled[(pooled.age == age) & (pooled.sex == 1) & (pooled.inst == 12)]

    assert len(rows(PRESENT)) == 1 and rows(ABSENT).empty  # the data these tests rely on
    return rows(PRESENT).iloc[0]


def test_null_group_key_no_longer_fails_where_the_target_is(open_lung: Running, truth: pd.Series) -> None:
    """``GROUP BY (NOT (T) OR NULL)``: the target's key is NULL; it goes to the (other) cell,
    which holds one person or none and is suppressed either way."""
    runs = [
        attempt(open_lung, f"SELECT COUNT(*) AS n FROM lung GROUP BY (NOT ({target(a)}) OR NULL)")
        for a in (PRESENT, ABSENT)
    ]
    present, absent = runs
    same_oracle(present, absent)
    assert not present.failed
    for run in runs:
        assert run.frame is not None
        # A suppressed (other) cell is left out of the result: the attacker never reads a 1 or a 0.
        assert "(other)" not in set(run.frame.iloc[:, 0])
        assert run.frame.attrs["suppressed"]["n"] == present.frame.attrs["suppressed"]["n"]  # type: ignore[union-attr]
        no_site_and_no_value(run, [truth.time, truth.meal_cal])


def test_a_cast_that_fails_only_on_the_target_fails_nowhere(open_lung: Running, truth: pd.Series) -> None:
    """``CAST(CASE WHEN T THEN 'x' ELSE '1' END AS INTEGER)``: TRY_CAST makes the target's value
    NULL instead of an engine error at central."""
    runs = [
        attempt(
            open_lung,
            f"SELECT COUNT(*) AS n FROM lung WHERE CAST(CASE WHEN {target(a)} THEN 'x' ELSE '1' END AS INTEGER) = 1",
        )
        for a in (PRESENT, ABSENT)
    ]
    same_oracle(*runs)
    for run in runs:
        assert not run.failed
        no_site_and_no_value(run, [truth.time, truth.meal_cal])


def test_an_out_of_range_value_fails_nowhere_and_is_never_quoted(open_lung: Running, truth: pd.Series) -> None:
    """``SUM(CASE WHEN T THEN meal_cal * 1e12 ELSE 0 END)``: 5.13e14 does not fit the fixed-point
    range at central; the cell is suppressed, nothing fails, no magnitude is quoted anywhere."""
    runs = [
        attempt(
            open_lung,
            f"SELECT COUNT(*) AS n, SUM(CASE WHEN {target(a)} THEN meal_cal * 1e12 ELSE 0 END) AS s FROM lung",
        )
        for a in (PRESENT, ABSENT)
    ]
    present, absent = runs
    same_oracle(present, absent)
    for run in runs:
        assert run.frame is not None
        no_site_and_no_value(run, [truth.time, truth.meal_cal, truth.meal_cal * 1e12])
    # The attacker's arithmetic on the released value: meal_cal = s / 1e12.
    assert present.frame is not None and present.frame["s"].tolist() == [SUPPRESSED]
    assert absent.frame is not None and absent.frame["s"].tolist() == [0.0]


def test_honest_group_by_ph_ecog_answers_with_its_null_in_other(open_lung: Running) -> None:
    """South holds the one patient without ph_ecog; the query used to fail naming south. Now the
    patient is counted in (other): suppressed (one person), so left out of the result, and the
    line keeps two real cells suppressed besides; every released cell equals pandas."""
    pooled = open_lung.pooled
    assert pooled.ph_ecog.isna().sum() == 1  # the data this test relies on
    out = open_lung.client.query(
        "SELECT ph_ecog, COUNT(*) AS n, AVG(time) AS t FROM lung GROUP BY ROLLUP(ph_ecog)"
    ).set_index("ph_ecog")
    assert out.index.tolist() == [0, 1, 2, 3, "(all)"]
    assert out.loc[3, "n"] == SUPPRESSED  # one patient
    released = 0
    for level, group in pooled.groupby("ph_ecog"):
        if out.loc[int(level), "n"] != SUPPRESSED:
            released += 1
            assert out.loc[int(level), "n"] == len(group)
            np.testing.assert_allclose(out.loc[int(level), "t"], group.time.mean(), rtol=1e-6)
    assert released == 2  # ECOG 3 and one more real cell are suppressed
    # The attacker's subtraction, presuming (other) empty, does not give the ECOG-3 patient's count.
    open_sum = sum(out.loc[level, "n"] for level in (0, 1, 2) if out.loc[level, "n"] != SUPPRESSED)
    assert len(pooled) - open_sum != 1
    assert out.loc["(all)", "n"] == len(pooled)
    np.testing.assert_allclose(out.loc["(all)", "t"], pooled.time.mean(), rtol=1e-6)


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A consortium where south's ``wt_loss`` is text (an export that wrote 'n/a'), so a query
    over it cannot run there: a local-step failure at one site that nothing at compile time sees."""
    frames = lung_by_site()
    south = frames["south"].copy()
    south["wt_loss"] = south["wt_loss"].map(lambda v: "n/a" if pd.isna(v) else str(int(v)))
    assert (south["wt_loss"] == "n/a").any()
    frames["south"] = south
    data = Dataset("lung", LUNG_SCHEMA, lambda: frames)
    running = start_retrying(tmp_path_factory.mktemp("privacy") / "mismatched", {}, None, data)
    yield running
    running.close()


def test_a_local_failure_at_one_site_fails_every_member_alike_and_names_none(mismatched: Running) -> None:
    t0 = time.monotonic()
    failed = attempt(mismatched, "SELECT COUNT(*) AS n, AVG(wt_loss) AS w FROM lung")
    assert time.monotonic() - t0 < 20, "the members waited for their timeout"
    assert failed.failed and LocalStepError.MESSAGE in failed.message
    reasons = {site: [(e["decision"], e["reason"]) for e in entries] for site, entries in failed.audit.items()}
    assert len({tuple(r) for r in reasons.values()}) == 1, reasons  # every site wrote the same entry
    assert reasons["south"] == [("failed", f"local: {LocalStepError.MESSAGE}")]
    no_site_and_no_value(failed, [])
    # The attacker's guess at which site failed: every text is the same whichever it was.
    assert not any(site in text for text in failed.texts for site in SITES)
    # The consortium still answers queries that do not touch the column.
    answered = attempt(mismatched, "SELECT COUNT(*) AS n FROM lung")
    assert answered.frame is not None and answered.frame["n"].tolist() == [len(mismatched.pooled)]
