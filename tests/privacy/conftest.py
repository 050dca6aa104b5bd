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
from ..lung import LUNG_SCHEMA, lung_by_site

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


PLANTED = 250_000.0
"""meal_cal planted for one male patient of central's in the ``declared`` consortium (the lung
target, a 74-year-old man of institution 12): most of the men's total, a fraction of everybody's."""

DERIVED = """
[tables.lung.derived]
karno_mean = { expr = "(ph_karno + pat_karno) / 2", grid = [0, 100, 5] }
"""
"""A derived column of the ``declared`` consortium's schema: the mean of the physician's and the
patient's Karnofsky scores (two columns combined: an analyst may not write it in an aggregate)."""


def _planted_lung() -> dict[str, pd.DataFrame]:
    frames = {site: df.copy() for site, df in lung_by_site().items()}
    central = frames["central"]
    central.loc[(central.age == 74) & (central.sex == 1) & (central.inst == 12), "meal_cal"] = PLANTED
    return frames


@pytest.fixture(scope="session")
def declared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Lung with a planted meal_cal and a derived column in schema.toml, under policies that
    ask for the dominance rule: north (1, 60), south (2, 80), combined (2, 60)."""
    policies = {
        "north": {"extra_policy": {"dominance": "[1, 60]"}},
        "south": {"extra_policy": {"dominance": "[2, 80]"}},
    }
    data = Dataset("lung", LUNG_SCHEMA + DERIVED, _planted_lung)
    running = start_retrying(tmp_path_factory.mktemp("declared") / "lung", policies, data=data)
    yield running
    running.close()


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
