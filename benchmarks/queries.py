"""Query benchmark: three sites x N rows in DuckDB (Parquet), over real agents and in-process, beside pandas.

    python benchmarks/queries.py [--rows 1000000] [--repeat 5] [--json] [--quick] [--in-process] [--relay]
                                 [--rtt-ms 20 --mbit 100]

Queries (``QUERIES``), on a synthetic ``patients`` table (sex, ward, age, sbp) per site:

* ``count_avg_std_2keys``: GROUP BY two keys with COUNT, AVG and STDDEV;
* ``median_by_group``: MEDIAN by group (on the public grid of ages);
* ``median_2keys``: GROUP BY two keys with COUNT and MEDIAN;
* ``count``: COUNT(*) over the three sites, the round trip of a small secure query.

Over agents (the default), a local consortium is built in a temporary folder
(``mpc_jupyter.demo.consortium``): three ``mpc-site-agent serve`` processes on loopback with
mutual TLS, each scanning its own Parquet file with DuckDB, and the analyst's
``Consortium.query()`` timed from the call until the DataFrame is back, after one warm-up
query of each kind; best and median of ``--repeat`` runs (``--latency-runs`` for ``count``).
The planner's in-process executor (``site_agent.query.execute``: the same local SQL, sharing
and MPC program in one process, no network) runs the same queries on the same files, and
pandas the same aggregates on the pooled rows in memory. Every answer is checked against
pandas; a mismatch stops the benchmark with an error. ``--in-process`` skips the agents.
``--rtt-ms`` puts every connection (agent to agent, analyst to agent) through
``benchmarks/wanproxy.py`` with that round-trip time and ``--mbit`` per direction: the
consortium file names the proxies' ports as the agents' addresses.

``--relay`` also runs the queries over a second consortium whose three agents listen nowhere
and reach each other and the analyst through ``mpc-relay serve``, taking turns with the direct
one run by run (``relay`` figures, and ``relay_vs_agents``: relayed best / direct best).

The data are generated with numpy from a seed and cached as Parquet under ``--cache``
(default: ``$TMPDIR/mpc-jupyter-bench``), so later runs start at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from engine import Target, machine
from wanproxy import Proxies

from mpc_jupyter.client import Consortium
from mpc_jupyter.demo.consortium import AgentProcesses, SiteSpec, TableSpec, build_consortium
from site_agent.cli.consortium import main as consortium_cli
from site_agent.net.loopback import free_ports
from site_agent.query import DisclosureRules, compile_query, execute
from site_agent.query.schema_file import load_schema_file

SEED = 20261124
COMMITTEE = 3
"""The first three sites are the compute committee; any further ones are input-only sites."""


def site_names(n: int) -> tuple[str, ...]:
    """``hospital-a``, ``hospital-b``, ... (at most 26)."""
    if not COMMITTEE <= n <= 26:
        raise SystemExit("--sites must be between 3 and 26")
    return tuple(f"hospital-{chr(ord('a') + k)}" for k in range(n))


SEXES = ("F", "M")
WARDS = ("cardio", "icu", "onco", "surgery")
AGE_GRID = (0, 120, 1)
SCHEMA_TOML = f"""[tables.patients]
sex = {{ type = "text", domain = {json.dumps(list(SEXES))} }}
ward = {{ type = "text", domain = {json.dumps(list(WARDS))} }}
age = {{ type = "integer", grid = {json.dumps(list(AGE_GRID))} }}
sbp = "float"
"""
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "mpc-jupyter-bench"


@dataclass(frozen=True)
class Query:
    """A benchmark query, the same aggregate in pandas on the pooled rows, and its output keys."""

    sql: str
    pandas: Callable[[pd.DataFrame], pd.DataFrame]
    keys: tuple[str, ...]


QUERIES = {
    "count_avg_std_2keys": Query(
        "SELECT sex, ward, COUNT(*) AS n, AVG(sbp) AS mean_sbp, STDDEV(sbp) AS sd_sbp FROM patients GROUP BY sex, ward",
        lambda df: df.groupby(["sex", "ward"]).sbp.agg(n="count", mean_sbp="mean", sd_sbp="std").reset_index(),
        ("sex", "ward"),
    ),
    "median_by_group": Query(
        "SELECT ward, MEDIAN(age) AS median_age FROM patients GROUP BY ward",
        lambda df: df.groupby("ward").age.median().rename("median_age").reset_index(),
        ("ward",),
    ),
    "median_2keys": Query(
        "SELECT sex, ward, COUNT(*) AS n, MEDIAN(age) AS median_age FROM patients GROUP BY sex, ward",
        lambda df: df.groupby(["sex", "ward"]).age.agg(n="count", median_age="median").reset_index(),
        ("sex", "ward"),
    ),
    "count": Query("SELECT COUNT(*) AS n FROM patients", lambda df: pd.DataFrame({"n": [len(df)]}), ()),
}
MANY_SITES = {
    "all_2keys": Query(
        "SELECT sex, ward, COUNT(*) AS n, AVG(sbp) AS mean_sbp, STDDEV(sbp) AS sd_sbp, MEDIAN(age) AS median_age "
        "FROM patients GROUP BY sex, ward",
        lambda df: (
            df.groupby(["sex", "ward"])
            .agg(n=("sbp", "count"), mean_sbp=("sbp", "mean"), sd_sbp=("sbp", "std"), median_age=("age", "median"))
            .reset_index()
        ),
        ("sex", "ward"),
    ),
    "count": QUERIES["count"],
}
"""With more than three sites (``--sites``): the query the many-sites target names, and the round trip."""

TARGETS = (
    Target(
        "agents: GROUP BY 2 keys COUNT/AVG/STDDEV <= 1 s (median)", "count_avg_std_2keys_agents_median_s", 1.0, True
    ),
    Target("agents: MEDIAN by group <= 2 s (median)", "median_by_group_agents_median_s", 2.0, True),
    Target("agents: COUNT round trip <= 50 ms (median)", "count_agents_median_s", 0.05, True),
    *(
        Target(f"relay: {name} <= 1.5x direct (best)", f"{name}_relay_vs_agents", 1.5, True)
        for name in ("count_avg_std_2keys", "median_by_group", "count")
    ),
)

MANY_TARGETS = (
    Target("20 sites: GROUP BY 2 keys COUNT/AVG/STDDEV/MEDIAN <= 5 s (median)", "all_2keys_agents_median_s", 5.0, True),
)

WAN_TARGETS = (
    Target("20 ms RTT: COUNT <= 0.3 s (median)", "count_agents_median_s", 0.3, True),
    Target("20 ms RTT: GROUP BY 2 keys with MEDIAN <= 1.5 s (median)", "median_2keys_agents_median_s", 1.5, True),
)


# --- data ------------------------------------------------------------------------------


def site_files(cache: Path, rows: int, sites: int = COMMITTEE) -> list[Path]:
    """Each site's Parquet file of ``rows`` patients, generated once per (rows, seed) and cached
    (the site's name is the file's stem)."""
    folder = cache / f"patients-{rows}-{SEED}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{site}.parquet" for site in site_names(sites)]
    for k, path in enumerate(paths):
        if not path.exists():
            _write_site(path, rows, np.random.default_rng([SEED, k]))
    return paths


def _write_site(path: Path, rows: int, rng: np.random.Generator) -> None:
    """One site's rows: age depends on the ward and blood pressure on sex and age, so groups differ."""
    sex = rng.integers(0, len(SEXES), rows, dtype=np.int8)
    ward = rng.integers(0, len(WARDS), rows, dtype=np.int8)
    age = np.clip(np.rint(rng.normal(45 + 7 * ward, 18)), 0, 110).astype(np.int64)
    sbp = rng.normal(118 + 6 * sex + 0.3 * age, 14)
    codes = pd.DataFrame({"sex": sex, "ward": ward, "age": age, "sbp": sbp})
    tmp = path.with_suffix(".tmp")
    con = duckdb.connect()
    con.register("codes", codes)
    con.execute(
        f"COPY (SELECT {_pick(SEXES)}[sex + 1] AS sex, {_pick(WARDS)}[ward + 1] AS ward, age, sbp FROM codes) "
        f"TO '{tmp}' (FORMAT parquet)"
    )
    con.close()
    tmp.rename(path)


def _pick(values: tuple[str, ...]) -> str:
    """A DuckDB list literal of strings."""
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def pooled_rows(paths: list[Path]) -> pd.DataFrame:
    """The three sites' rows in one DataFrame (what a central data warehouse would hold)."""
    return pd.concat([duckdb.read_parquet(str(p)).df() for p in paths], ignore_index=True)


# --- timing and checks -----------------------------------------------------------------


def timed(fn: Callable[[], pd.DataFrame], runs: int) -> tuple[list[float], pd.DataFrame]:
    """Wall-clock seconds of each of ``runs`` calls, and the last call's result."""
    seconds, out = [], pd.DataFrame()
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return seconds, out


def check(name: str, got: pd.DataFrame, expected: pd.DataFrame, where: str) -> None:
    """Raise if ``got`` differs from pandas: counts exactly, means and deviations to 1e-4
    relative, medians to half a grid step (pandas averages the two middle values)."""
    keys = list({**QUERIES, **MANY_SITES}[name].keys)
    if keys:  # the keys' (other) cells hold nobody in these data: suppressed, not in pandas' groups
        other = got[keys].eq("(other)").any(axis=1)
        if not got[other].drop(columns=keys).map(lambda v: str(v).startswith("<")).all().all():
            raise AssertionError(f"{name} ({where}): an (other) cell was opened:\n{got[other]}")
        got = got[~other].infer_objects()
    a = got.sort_values(keys).reset_index(drop=True) if keys else got.reset_index(drop=True)
    b = expected.sort_values(keys).reset_index(drop=True) if keys else expected
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        raise AssertionError(f"{name} ({where}): columns/rows {list(a.columns)} x {len(a)}, pandas {list(b.columns)}")
    for col in b.columns:
        if col in keys or col == "n":
            ok = a[col].tolist() == b[col].tolist()
        elif col == "median_age":
            ok = bool(np.all(np.abs(a[col] - b[col]) <= AGE_GRID[2] / 2))
        else:
            ok = bool(np.allclose(a[col], b[col], rtol=1e-4, atol=0))
        if not ok:
            raise AssertionError(f"{name} ({where}): column {col} differs from pandas:\n{a}\npandas:\n{b}")


def summary(prefix: str, seconds: list[float]) -> dict[str, float]:
    """Best and median of a list of timings, under ``prefix``."""
    return {f"{prefix}_best_s": min(seconds), f"{prefix}_median_s": statistics.median(seconds)}


# --- the two ways of running a query -----------------------------------------------------


def in_process(
    paths: list[Path], pooled: dict[str, pd.DataFrame], repeat: int, queries: dict[str, Query]
) -> dict[str, Any]:
    """Each query through the planner's in-process executor on the same Parquet files."""
    schema_file = paths[0].parent / "schema.toml"
    schema_file.write_text(SCHEMA_TOML)
    schema = load_schema_file(schema_file)
    cons = {}
    for path in paths:
        con = duckdb.connect()
        con.execute(f"CREATE VIEW patients AS SELECT * FROM read_parquet('{path}')")
        cons[path.stem] = con
    out: dict[str, Any] = {}
    for name, query in queries.items():
        plan = compile_query(query.sql, schema, DisclosureRules())
        execute(plan, cons)  # warm-up
        seconds, frame = timed(lambda plan=plan: execute(plan, cons), repeat)  # type: ignore[misc]
        check(name, frame, pooled[name], "in-process")
        out |= summary(f"{name}_in_process", seconds)
        out[f"{name}_rounds"] = frame.attrs["rounds"]
        out[f"{name}_bytes"] = frame.attrs["bytes"]
    return out


def over_agents(
    paths: list[Path],
    pooled: dict[str, pd.DataFrame],
    repeat: int,
    latency_runs: int,
    queries: dict[str, Query],
    relay: bool = False,
    wan: tuple[float, float] | None = None,
    postgres: bool = False,
) -> dict[str, Any]:
    """Each query through ``Consortium.query()`` against the agent processes over mutual TLS
    (three members, and input-only sites beyond the first three files).

    With ``postgres``, a second consortium on the same files runs beside it whose first site
    reads its rows from a PostgreSQL server instead (figures named ``postgres``), taking turns
    run by run like the relay's.

    With ``relay``, a second consortium on the same files runs beside it whose agents listen
    nowhere and are reached only through ``mpc-relay serve`` (figures named ``relay``); each
    timed run goes to both consortia in turn, so both see the same load on a shared machine.
    """
    out: dict[str, Any] = {}
    kinds = ("agents", "relay") if relay else ("agents", "postgres") if postgres else ("agents",)
    with tempfile.TemporaryDirectory(prefix="mpc-bench-") as tmp, contextlib.ExitStack() as stack:
        clients: dict[str, Consortium] = {}
        url = None
        if postgres:
            start = time.perf_counter()
            url = stack.enter_context(postgres_copy(paths[0]))
            out["postgres_load_s"] = time.perf_counter() - start
        for kind in kinds:
            start = time.perf_counter()
            agents, clients[kind] = start_consortium(
                stack, Path(tmp) / kind, paths, kind == "relay", wan, url if kind == "postgres" else None
            )
            out[f"{kind}_start_s"] = time.perf_counter() - start
            out[f"{kind}_pids"] = {site: proc.pid for site, proc in agents.procs.items()}
        for name, query in queries.items():
            for client in clients.values():
                client.query(query.sql)  # warm-up
            runs = latency_runs if name == "count" else repeat
            for kind, (seconds, phases, frame) in agent_runs(clients, query.sql, runs).items():
                check(name, frame, pooled[name], kind)
                out |= summary(f"{name}_{kind}", seconds)
                out[f"{name}_{kind}_phases_s"] = phases
    return out


def via_proxies(consortium_file: Path) -> dict[int, tuple[str, int]]:
    """Route every connection through a proxy port: the analyst's consortium file names the
    proxies as the agents' addresses; each agent gets its own copy that keeps its own address
    (where it listens) and names the proxies for the others. Returns the proxy routes."""
    text = consortium_file.read_text()
    real = dict(re.findall(r'^\[sites\.(.+?)\]\s*\naddress = "127\.0\.0\.1:(\d+)"', text, flags=re.M))
    proxy = {site: free_ports(1)[0] for site in real}

    def addresses(keep: str | None) -> str:
        def repoint(m: re.Match[str]) -> str:
            port = m.group(2) if m.group(1) == keep else proxy[m.group(1)]
            return f'[sites.{m.group(1)}]\naddress = "127.0.0.1:{port}"'

        return re.sub(r'^\[sites\.(.+?)\]\s*\naddress = "127\.0\.0\.1:(\d+)"', repoint, text, flags=re.M)

    consortium_file.write_text(addresses(None))
    for site in real:
        own = consortium_file.with_name(f"consortium.{site}.toml")
        own.write_text(addresses(site))
        agent_file = consortium_file.parent / "sites" / site / "agent.toml"
        agent_file.write_text(
            re.sub(r"^consortium = .*$", f"consortium = {json.dumps(str(own))}", agent_file.read_text(), flags=re.M)
        )
    return {proxy[site]: ("127.0.0.1", int(port)) for site, port in real.items()}


def start_consortium(
    stack: contextlib.ExitStack,
    root: Path,
    paths: list[Path],
    relay: bool,
    wan: tuple[float, float] | None = None,
    postgres_url: str | None = None,
) -> tuple[AgentProcesses, Consortium]:
    """A local consortium in ``root`` serving ``paths``, its agents running and an analyst
    connected, until ``stack`` closes; with ``relay``, every site behind one relay; with ``wan``
    (RTT in ms, Mbit/s), every direct connection through the WAN proxy; with ``postgres_url``,
    the first site's table in that PostgreSQL database (:func:`postgres_copy`)."""
    sites = [SiteSpec(p.stem, {"patients": TableSpec(p)}, compute=k < COMMITTEE) for k, p in enumerate(paths)]
    with contextlib.redirect_stdout(sys.stderr):  # the builder's messages; stdout is the report
        consortium_file = build_consortium(root, sites, SCHEMA_TOML)
        if postgres_url:
            agent_toml = root / "sites" / paths[0].stem / "agent.toml"
            text = agent_toml.read_text()
            path_line = re.search(r"^path = .*$", text[text.index("[tables.patients]") :], flags=re.M)
            assert path_line is not None
            source = f'source = {json.dumps(postgres_url)}\ntable = "patients"'
            agent_toml.write_text(text.replace(path_line.group(0), source))
        if relay:
            stack.enter_context(relay_process(root, [p.stem for p in paths]))
        elif wan:
            stack.enter_context(Proxies(via_proxies(consortium_file), *wan))
    agents = stack.enter_context(AgentProcesses(root, [p.stem for p in paths]))
    return agents, stack.enter_context(Consortium.connect(consortium_file, timeout=120))


@contextlib.contextmanager
def postgres_copy(path: Path) -> Iterator[str]:
    """A throw-away PostgreSQL server (``tests/data/pgserver.py``) holding the rows of the
    Parquet file ``path`` as table ``patients``; yields the read-only role's URL."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.data.pgserver import PostgresServer

    types = {"VARCHAR": "text", "BIGINT": "bigint", "DOUBLE": "double precision"}
    with PostgresServer() as server:
        con = duckdb.connect()
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
        columns = {str(r[0]): types[str(r[1])] for r in described}
        server.load("patients", columns, con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall())
        con.close()
        yield server.url()


@contextlib.contextmanager
def relay_process(root: Path, sites: list[str]) -> Iterator[None]:
    """A relay for ``sites`` of the consortium in ``root`` (``mpc-consortium add-relay``), run
    as ``mpc-relay serve`` for the duration of the block."""
    (port,) = free_ports(1)
    if consortium_cli(["add-relay", str(root), "relay", "--address", f"127.0.0.1:{port}", "--sites", *sites]):
        raise RuntimeError("mpc-consortium add-relay failed")
    log = (root / "relay.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "site_agent.cli.relay",
            "serve",
            "--config",
            str(root / "relays" / "relay" / "relay.toml"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def agent_runs(
    clients: dict[str, Consortium], sql: str, runs: int
) -> dict[str, tuple[list[float], dict[str, float], pd.DataFrame]]:
    """``runs`` timed queries on each client, taking turns: per client, the analyst's seconds per
    run, the median time at which the slowest agent reached each phase it reports (``answered``:
    it sent its result), and the last answer."""
    seconds: dict[str, list[float]] = {kind: [] for kind in clients}
    reached: dict[str, list[dict[str, float]]] = {kind: [] for kind in clients}
    frames: dict[str, pd.DataFrame] = {}
    for _ in range(runs):
        for kind, client in clients.items():
            at: dict[str, float] = {}

            def progress(site: str, phase: str, since_start: float, at: dict[str, float] = at) -> None:
                at[phase] = max(at.get(phase, 0.0), since_start)

            start = time.perf_counter()
            frames[kind] = client.query(sql, progress=progress)
            seconds[kind].append(time.perf_counter() - start)
            at["answered"] = max(s["seconds"] for s in frames[kind].attrs["stats"].values())
            reached[kind].append(at)
    return {
        kind: (
            seconds[kind],
            {p: statistics.median(r[p] for r in reached[kind] if p in r) for p in reached[kind][-1]},
            frames[kind],
        )
        for kind in clients
    }


# --- report ----------------------------------------------------------------------------


def measure(
    rows: int,
    repeat: int,
    latency_runs: int,
    cache: Path,
    agents: bool,
    quick: bool,
    relay: bool = False,
    wan: tuple[float, float] | None = None,
    sites: int = COMMITTEE,
    postgres: bool = False,
) -> dict[str, Any]:
    """Every figure, ratio and target verdict as one flat dictionary (no verdicts when ``quick``)."""
    queries = QUERIES if sites == COMMITTEE else MANY_SITES
    figures: dict[str, Any] = {"rows_per_site": rows, "sites": sites, "quick": quick, "machine": machine()}
    figures["queries"] = list(queries)
    figures["wan_rtt_ms"], figures["wan_mbit"] = wan if wan else (None, None)
    start = time.perf_counter()
    paths = site_files(cache, rows, sites)
    data = pooled_rows(paths)
    figures["data_seconds"] = time.perf_counter() - start
    pooled = {name: q.pandas(data) for name, q in queries.items()}
    for name, q in queries.items():
        figures |= summary(f"{name}_pandas", timed(lambda q=q: q.pandas(data), repeat)[0])  # type: ignore[misc]
    figures |= in_process(paths, pooled, repeat, queries)
    if agents:
        figures |= over_agents(paths, pooled, repeat, latency_runs, queries, relay, wan, postgres)
    if agents and relay:
        for name in queries:
            figures[f"{name}_relay_vs_agents"] = figures[f"{name}_relay_best_s"] / figures[f"{name}_agents_best_s"]
    if agents and postgres:
        for name in queries:
            figures[f"{name}_postgres_vs_agents"] = (
                figures[f"{name}_postgres_median_s"] / figures[f"{name}_agents_median_s"]
            )
    for name in queries:
        pandas_s = figures[f"{name}_pandas_best_s"]
        figures[f"{name}_in_process_vs_pandas"] = figures[f"{name}_in_process_best_s"] / pandas_s
        if agents:
            net, local = figures[f"{name}_agents_best_s"], figures[f"{name}_in_process_best_s"]
            figures[f"{name}_agents_vs_pandas"] = net / pandas_s
            figures[f"{name}_agents_vs_in_process"] = net / local
            figures[f"{name}_network_share"] = max(net - local, 0.0) / net
    figures["checked_against_pandas"] = True
    targets = WAN_TARGETS if wan and wan[0] == 20 else () if wan else TARGETS if sites == COMMITTEE else MANY_TARGETS
    if sites != 20:
        targets = tuple(t for t in targets if t not in MANY_TARGETS)
    if postgres:
        grouped = "count_avg_std_2keys" if sites == COMMITTEE else "all_2keys"
        targets = (
            Target(f"one site in PostgreSQL: {grouped} <= 2x all DuckDB", f"{grouped}_postgres_vs_agents", 2.0, True),
        )
    figures["targets"] = {t.name: None if quick else t.check(figures) for t in targets}
    return figures


def _ms(seconds: float | None) -> str:
    """Seconds in a readable unit (µs, ms or s)."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.1f} µs"
    return f"{seconds * 1000:,.1f} ms" if seconds < 1 else f"{seconds:,.3f} s"


def table(f: dict[str, Any]) -> str:
    """The figures as a readable table with PASS/FAIL per target."""
    lines = [
        f"{f['sites']} sites x {f['rows_per_site']:,} rows (DuckDB over Parquet); best / median of runs; "
        "answers equal pandas on the pooled rows",
        f"{'query':<22}{'agents best':>14}{'agents median':>15}{'in-process':>13}{'pandas':>12}"
        f"{'x pandas':>10}{'net share':>11}{'rounds':>8}",
    ]
    for name in f["queries"]:
        agents = f.get(f"{name}_agents_best_s")
        share = f.get(f"{name}_network_share")
        lines.append(
            f"{name:<22}{_ms(agents):>14}{_ms(f.get(name + '_agents_median_s')):>15}"
            f"{_ms(f[name + '_in_process_best_s']):>13}{_ms(f[name + '_pandas_best_s']):>12}"
            f"{f.get(name + '_agents_vs_pandas', f[name + '_in_process_vs_pandas']):>9.1f}x"
            f"{'-' if share is None else f'{share:.0%}':>11}{f[name + '_rounds']:>8}"
        )
    lines.append("x pandas: agents best / pandas best (in-process best / pandas best with --in-process)")
    for name in f["queries"]:
        if f.get(f"{name}_relay_best_s") is not None:
            lines.append(
                f"{name}: through the relay best {_ms(f[name + '_relay_best_s'])}, median "
                f"{_ms(f[name + '_relay_median_s'])}, {f[name + '_relay_vs_agents']:.2f}x direct best"
            )
        if f.get(f"{name}_postgres_median_s") is not None:
            lines.append(
                f"{name}: first site in PostgreSQL median {_ms(f[name + '_postgres_median_s'])}, "
                f"{f[name + '_postgres_vs_agents']:.2f}x all DuckDB median"
            )
    for name in f["queries"]:
        phases = f.get(f"{name}_agents_phases_s")
        if phases:
            lines.append(f"{name}: slowest agent reached " + ", ".join(f"{k} {_ms(v)}" for k, v in phases.items()))
    if f["quick"]:
        lines.append("quick run: sizes too small for the targets, no verdicts")
    lines += [f"{'PASS' if ok else 'FAIL' if ok is False else 'n/a '}  {name}" for name, ok in f["targets"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="rows per site (default 1,000,000; 10,000 quick)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per query (default 5; 2 quick)")
    parser.add_argument("--latency-runs", type=int, default=None, help="timed COUNT runs (default 30; 5 quick)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for the generated Parquet files")
    parser.add_argument("--in-process", action="store_true", help="skip the agents: in-process executor and pandas")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--relay", action="store_true", help="also over agents reached only through mpc-relay")
    parser.add_argument("--rtt-ms", type=float, default=None, help="agents behind the WAN proxy with this RTT")
    parser.add_argument("--mbit", type=float, default=100.0, help="the WAN proxy's rate per direction (Mbit/s)")
    parser.add_argument(
        "--sites", type=int, default=COMMITTEE, help="data sites: 3 committee members, the rest input-only (default 3)"
    )
    parser.add_argument("--postgres", action="store_true", help="also with the first site's rows in PostgreSQL")
    args = parser.parse_args(argv)
    rows = args.rows or (10_000 if args.quick else 1_000_000)
    repeat = args.repeat or (2 if args.quick else 5)
    latency_runs = args.latency_runs or (5 if args.quick else 30)
    wan = (args.rtt_ms, args.mbit) if args.rtt_ms else None
    figures = measure(
        rows,
        repeat,
        latency_runs,
        args.cache,
        not args.in_process,
        args.quick,
        args.relay,
        wan,
        args.sites,
        args.postgres,
    )
    print(json.dumps(figures) if args.json else table(figures))


if __name__ == "__main__":
    main()
