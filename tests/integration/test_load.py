"""Load: 50 queries from five analysts at once on three real agents.

Five analysts (``mpc-consortium add-analyst``), each with its own client, each asking its own
query ten times at once from ten threads: 50 queries over the same three agents, five in flight
at a time (a client runs its analyst's queries one after the other, since every site checks a
query against the sets it released to that analyst before; docs/privacy.md). Every answer must
equal pandas on the pooled rows, and be the answer to the query its analyst asked (the five
queries differ in their columns and values, so an answer delivered to the wrong request or
analyst shows), and the agents' resident memory afterwards stays bounded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import Consortium
from mpc_jupyter.demo.consortium import AgentProcesses, build_consortium
from site_agent.cli.consortium import main as consortium_cli

from ..lung import LUNG_SCHEMA, SITES, lung_by_site
from .conftest import _sites

ANALYSTS = ("analyst", "ana-1", "ana-2", "ana-3", "ana-4")
PER_ANALYST = 10
RSS_LIMIT_MB = 1500  # generous: an idle agent holds about 170 MB here

Check = Callable[[pd.DataFrame, pd.DataFrame], None]


def _by(out: pd.DataFrame, key: str) -> pd.DataFrame:
    return out.set_index(key).sort_index()


def _count_by_sex(out: pd.DataFrame, pooled: pd.DataFrame) -> None:
    assert list(out.columns) == ["sex", "n"]
    assert _by(out, "sex")["n"].tolist() == pooled.groupby("sex").size().tolist()


def _age_by_status(out: pd.DataFrame, pooled: pd.DataFrame) -> None:
    assert list(out.columns) == ["status", "mean_age"]
    np.testing.assert_allclose(_by(out, "status")["mean_age"], pooled.groupby("status").age.mean(), rtol=1e-6)


def _time_by_sex_status(out: pd.DataFrame, pooled: pd.DataFrame) -> None:
    assert list(out.columns) == ["sex", "status", "n", "total_time"]
    got, ref = out.set_index(["sex", "status"]).sort_index(), pooled.groupby(["sex", "status"])
    assert ref.size().min() >= 5  # no cell is suppressed
    assert got["n"].tolist() == ref.size().tolist()
    np.testing.assert_allclose(got["total_time"], ref.time.sum(), rtol=1e-6)


def _wt_loss_sd(out: pd.DataFrame, pooled: pd.DataFrame) -> None:
    assert list(out.columns) == ["with_wt", "sd_wt"]
    assert out["with_wt"].tolist() == [int(pooled.wt_loss.notna().sum())]
    np.testing.assert_allclose(out["sd_wt"], [pooled.wt_loss.std()], rtol=1e-6)


def _older_by_sex(out: pd.DataFrame, pooled: pd.DataFrame) -> None:
    assert list(out.columns) == ["sex", "older"]
    np.testing.assert_allclose(_by(out, "sex")["older"], pooled.groupby("sex").age.apply(lambda a: (a >= 65).mean()))


QUERIES: dict[str, tuple[str, Check]] = {
    "analyst": ("SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex", _count_by_sex),
    "ana-1": ("SELECT status, AVG(age) AS mean_age FROM lung GROUP BY status", _age_by_status),
    "ana-2": (
        "SELECT sex, status, COUNT(*) AS n, SUM(time) AS total_time FROM lung GROUP BY sex, status",
        _time_by_sex_status,
    ),
    "ana-3": ("SELECT COUNT(wt_loss) AS with_wt, STDDEV(wt_loss) AS sd_wt FROM lung", _wt_loss_sd),
    "ana-4": ("SELECT sex, AVG(age >= 65) AS older FROM lung GROUP BY sex", _older_by_sex),
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, AgentProcesses, pd.DataFrame]]:
    root = tmp_path_factory.mktemp("load")
    frames = lung_by_site()
    config = build_consortium(root / "consortium", _sites(root / "data", frames, {}), LUNG_SCHEMA)
    for name in ANALYSTS[1:]:
        with contextlib.redirect_stdout(sys.stderr):
            assert consortium_cli(["add-analyst", str(config.parent), name]) == 0
    procs = AgentProcesses(config.parent, list(SITES))
    procs.start()
    try:
        yield config, procs, pd.concat(list(frames.values()), ignore_index=True)
    finally:
        procs.stop()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_fifty_concurrent_queries_from_five_analysts(loaded: tuple[Path, AgentProcesses, pd.DataFrame]) -> None:
    config, procs, pooled = loaded
    clients = {name: Consortium.connect(config, name, timeout=120) for name in ANALYSTS}
    try:
        jobs = [name for name in ANALYSTS for _ in range(PER_ANALYST)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(lambda name: (name, clients[name].query(QUERIES[name][0])), jobs))
    finally:
        for client in clients.values():
            client.close()
    assert len(answers) == len(ANALYSTS) * PER_ANALYST
    for name, out in answers:
        QUERIES[name][1](out, pooled)  # its own query's answer, equal to pandas
    rss = {site: _rss_mb(proc.pid) for site, proc in procs.procs.items()}
    assert all(0 < mb < RSS_LIMIT_MB for mb in rss.values()), rss
