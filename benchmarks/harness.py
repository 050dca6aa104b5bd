"""The shared harness of the statement benchmarks (models.py, cox.py, validate.py,
kaplan_meier.py): one statement timed in process (every site's DuckDB over its Parquet file, the
planner's MPC program in one process, no network) and over three agent processes (mutual TLS on
loopback, through ``Consortium.query``), each run ``repeat`` times after a warm-up over agents.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from mpc_jupyter.client import Consortium
from mpc_jupyter.demo.consortium import AgentProcesses, SiteSpec, TableSpec, build_consortium
from site_agent.query import DisclosureRules, compile_query, execute
from site_agent.query.catalog import Schema


def timed(fn: Callable[[], pd.DataFrame], repeat: int) -> tuple[list[float], pd.DataFrame]:
    """Wall-clock seconds of ``repeat`` calls of ``fn``, and the last result."""
    seconds, out = [], pd.DataFrame()
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - started)
    return seconds, out


def connections(sites: Sequence[str], paths: Sequence[Path], table: str) -> dict[str, duckdb.DuckDBPyConnection]:
    """One in-memory DuckDB per site, ``table`` a view over the site's Parquet file."""
    cons = {}
    for site, path in zip(sites, paths, strict=True):
        con = duckdb.connect()
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
        cons[site] = con
    return cons


def in_process(
    sites: Sequence[str],
    paths: Sequence[Path],
    table: str,
    statement: str,
    schema: Callable[[duckdb.DuckDBPyConnection], Schema],
    repeat: int,
    params: dict[str, Any] | None = None,
) -> tuple[list[float], pd.DataFrame]:
    """``statement`` (with its ``params``) compiled against ``schema(first site's connection)``
    and run in one process."""
    cons = connections(sites, paths, table)
    plan = compile_query(statement, schema(cons[sites[0]]), DisclosureRules(), tuple(sites), params=params)
    return timed(lambda: execute(plan, cons), repeat)


@contextlib.contextmanager
def agents(sites: Sequence[str], paths: Sequence[Path], table: str, schema_toml: str) -> Iterator[Consortium]:
    """A consortium of agent processes started for the run (schema ``schema_toml``, the demo's
    default policies), each site serving ``table`` from its Parquet file; the analyst's client."""
    with tempfile.TemporaryDirectory(prefix="mpc-bench-") as tmp, contextlib.ExitStack() as stack:
        specs = [SiteSpec(site, {table: TableSpec(path)}) for site, path in zip(sites, paths, strict=True)]
        with contextlib.redirect_stdout(sys.stderr):
            consortium_file = build_consortium(Path(tmp), specs, schema_toml)
        stack.enter_context(AgentProcesses(Path(tmp), list(sites)))
        yield stack.enter_context(Consortium.connect(consortium_file, timeout=300))


def over_agents(
    sites: Sequence[str],
    paths: Sequence[Path],
    table: str,
    statement: str,
    schema_toml: str,
    repeat: int,
    params: dict[str, Any] | None = None,
) -> tuple[list[float], pd.DataFrame]:
    """``statement`` (with its ``params``) through three agent processes started for the run
    (schema ``schema_toml``)."""
    with agents(sites, paths, table, schema_toml) as client:
        client.query(statement, params)  # warm-up: connections, page cache
        return timed(lambda: client.query(statement, params), repeat)
