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
from lifelines.datasets import load_lung

from site_agent.agent.models import LEDGER_RULE, ModelCompiled
from site_agent.mpc.arithmetic import input_all
from site_agent.mpc.party import Party, run_in_memory
from site_agent.privacy.ledger import Ledger
from site_agent.query import DisclosureRules, compile_query
from site_agent.query.membership import membership

from ..models.conftest import relative, split

TARGET = "age = 74 AND sex = 1 AND inst = 12"


@pytest.fixture(scope="module")
def lung() -> tuple[dict[str, Any], Any, pd.DataFrame]:
    frame = load_lung().rename(columns=lambda c: c.replace(".", "_")).dropna(subset=["inst"]).reset_index(drop=True)
    frame["id"] = range(len(frame))
    cons, schema = split(frame, "lung", {"lung.sex": [1, 2]}, "id")
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
