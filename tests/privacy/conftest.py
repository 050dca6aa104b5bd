"""Consortia for the attacks: three real agents each, default policy (k = 5, MIN/MAX off).

``lung`` is lifelines' lung data split by institution; ``gbsg2`` is the GBSG2 breast-cancer
data dealt over the three sites. Every site's policy declares ``id`` an identifier and the
schema declares it the person column. The attacker holds valid analyst keys.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from mpc_jupyter.client import QueryFailed
from site_agent.errors import MpcError

from ..gbsg2 import GBSG2_SCHEMA, gbsg2_by_site
from ..integration.conftest import LUNG, SITES, Dataset, Running, start_retrying

K = 5
GBSG2 = Dataset("gbsg2", GBSG2_SCHEMA, gbsg2_by_site)


@pytest.fixture(scope="session")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    root = tmp_path_factory.mktemp("privacy")
    with ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(start_retrying, root / name, {}, None, data)
            for name, data in (("lung", LUNG), ("gbsg2", GBSG2))
        }
        started = {name: fut.result() for name, fut in futures.items()}
    yield started
    for r in started.values():
        r.close()


@pytest.fixture(scope="session")
def lung(attacked: dict[str, Running]) -> Running:
    return attacked["lung"]


@pytest.fixture(scope="session")
def gbsg2(attacked: dict[str, Running]) -> Running:
    return attacked["gbsg2"]


def value(frame: pd.DataFrame, column: str, row: int = 0) -> float | None:
    """A released number as the attacker reads it: None where it was withheld."""
    v: Any = frame[column].iloc[row]
    return None if isinstance(v, str) or pd.isna(v) else float(v)


def derive(*values: float | None, sign: tuple[int, ...] | None = None) -> float | None:
    """The attacker's arithmetic: a signed sum of released numbers, None if any was withheld."""
    if any(v is None for v in values):
        return None
    signs = sign or (1,) * len(values)
    return float(sum(s * v for s, v in zip(signs, values, strict=True)))  # type: ignore[misc]


@dataclass(frozen=True)
class Target:
    """One patient the attacker singles out by quasi-identifiers, and a value to steal."""

    running: Running
    table: str
    where: str  # SQL predicate true for the target alone
    column: str  # the value the attacker wants
    mask: pd.Series  # the same predicate on the pooled rows

    @property
    def row(self) -> pd.Series:
        rows = self.running.pooled[self.mask]
        assert len(rows) == 1, "the attack needs a target who is alone"
        return rows.iloc[0]

    def ask(self, sql: str) -> pd.DataFrame | None:
        """The attacker's query; None when it was refused (nothing released)."""
        try:
            return self.running.client.query(sql.format(T=self.where, t=self.table, v=self.column))
        except (QueryFailed, MpcError):
            return None


@pytest.fixture(params=["lung", "gbsg2"])
def target(request: pytest.FixtureRequest) -> Target:
    running: Running = request.getfixturevalue(request.param)
    pooled = running.pooled
    if request.param == "lung":
        mask = (pooled.age == 74) & (pooled.sex == 1) & (pooled.inst == 12)
        return Target(running, "lung", "age = 74 AND sex = 1 AND inst = 12", "time", mask)
    combos = pooled.groupby(["age", "tsize", "tgrade"]).size()
    age, tsize, grade = next(k for k, n in combos.items() if n == 1)
    mask = (pooled.age == age) & (pooled.tsize == tsize) & (pooled.tgrade == grade)
    return Target(running, "gbsg2", f"age = {age} AND tsize = {tsize} AND tgrade = '{grade}'", "time", mask)


def forget(running: Running, sites: tuple[str, ...] = SITES) -> None:
    """Start the sites' ledgers afresh (tests share one consortium)."""
    for site in sites:
        shutil.rmtree(running.audit_path(site).parent / "ledger", ignore_errors=True)


@pytest.fixture
def open_lung(lung: Running) -> Running:
    """The lung consortium under every site's default policy, its ledgers started afresh."""
    forget(lung)
    return lung
