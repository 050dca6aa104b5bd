"""A local consortium on this machine: keys, configs, data, and the three agents as processes.

Used by the demo (``mpc-jupyter demo``) and by the integration tests, so both exercise the
same real path: certificates from a fresh consortium CA, mutual TLS on loopback, one
``mpc-site-agent serve`` process per site, each with its own DuckDB over its own files.

``build_consortium`` writes everything under one folder; ``AgentProcesses`` starts the
agents, waits until each logs that it serves, restarts one of them, and stops them with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from site_agent.cli.consortium import main as consortium_cli
from site_agent.errors import ConfigError
from site_agent.net.loopback import free_ports
from site_agent.tomlfile import toml_key, toml_str, toml_str_list


@dataclass(frozen=True)
class TableSpec:
    """A table a site serves: its file, the columns it exposes and its identifier columns."""

    path: Path
    columns: Sequence[str] | None = None  # None: all columns but identifiers
    identifiers: Sequence[str] = ()


@dataclass(frozen=True)
class SiteSpec:
    """One site of a local consortium: its tables and its policy knobs.

    ``data=False``: a neutral compute member that holds no data (``tables`` must be empty).
    ``compute=False``: an input-only site (it holds data and shares its inputs with the committee).
    """

    name: str
    tables: Mapping[str, TableSpec]
    min_cell_size: int = 5
    statement_kinds: Sequence[str] = ("aggregate", "per_site_breakdown", "model")
    max_queries_per_hour: int = 1000
    max_groups: int = 5000
    extra_policy: Mapping[str, str] = field(default_factory=dict)
    privacy: Mapping[str, str] = field(default_factory=dict)
    """Keys of the policy's ``[privacy]`` section, as TOML values (``{"review": '"dpo"'}``)."""
    data: bool = True
    compute: bool = True


def build_consortium(
    root: Path,
    sites: Sequence[SiteSpec],
    schema_toml: str,
    analyst: str = "analyst",
    name: str = "Local consortium",
    more_analysts: Sequence[str] = (),
) -> Path:
    """Create a consortium of three computing sites and any number of input-only sites under
    ``root``; returns consortium.toml."""
    if sum(site.compute for site in sites) != 3:
        raise ConfigError("a local consortium has exactly three computing sites")
    for site in sites:
        if not site.data and site.tables:
            raise ConfigError(f"site {site.name!r} holds no data but has tables")
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} is not empty")
    _cli("init", str(root), "--name", name)
    for site in sites:
        role = ("--compute",) if site.compute else ()
        data = () if site.data else ("--no-data",)
        _cli("add-site", str(root), site.name, "--address", f"127.0.0.1:{free_ports(1)[0]}", *role, *data)
        _write_site(root / "sites" / site.name, site)
    for name_ in (analyst, *more_analysts):
        _cli("add-analyst", str(root), name_)
    (root / "schema.toml").write_text(schema_toml)
    return root / "consortium.toml"


def _cli(*argv: str) -> None:
    code = consortium_cli(list(argv))
    if code:
        raise ConfigError(f"mpc-consortium {' '.join(argv)} failed with exit code {code}")


def _write_site(folder: Path, site: SiteSpec) -> None:
    with (folder / "agent.toml").open("a") as f:
        for table, spec in site.tables.items():
            f.write(f"\n[tables.{toml_key(table)}]\npath = {toml_str(str(Path(spec.path).resolve()))}\n")
    lines = [
        f"# Policy of {site.name}, written by the local consortium builder.",
        "[policy]",
        f"min_cell_size = {site.min_cell_size}",
        'analysts = "*"',
        f"statement_kinds = {toml_str_list(list(site.statement_kinds))}",
        f"max_groups = {site.max_groups}",
        f"max_queries_per_hour = {site.max_queries_per_hour}",
        *(f"{k} = {v}" for k, v in site.extra_policy.items()),
    ]
    if site.privacy:
        lines += ["", "[privacy]", *(f"{k} = {v}" for k, v in site.privacy.items())]
    for table, spec in site.tables.items():
        columns = '"*"' if spec.columns is None else toml_str_list(list(spec.columns))
        lines += [
            "",
            f"[tables.{toml_key(table)}]",
            f"columns = {columns}",
            f"identifiers = {toml_str_list(list(spec.identifiers))}",
        ]
    (folder / "policy.toml").write_text("\n".join(lines) + "\n")


class AgentProcesses:
    """The consortium's agents as child processes (``mpc-site-agent serve``)."""

    def __init__(self, consortium_dir: Path, sites: Sequence[str], log_dir: Path | None = None) -> None:
        self.dir = consortium_dir
        self.sites = list(sites)
        self.log_dir = log_dir or consortium_dir / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, timeout: float = 60.0) -> AgentProcesses:
        """Start every agent and wait until all serve; raises with the log tail if one dies."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for site in self.sites:
            self._launch(site, "wb")
        self._wait_serving({site: 0 for site in self.sites}, timeout, stop_all=True)
        return self

    def restart(self, site: str, timeout: float = 60.0) -> float:
        """Stop one agent (SIGTERM, if it still runs), start it again with the same configuration
        and wait until it serves; returns the seconds that took. Its log is appended to."""
        t0 = time.monotonic()
        proc = self.procs[site]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        served = sum(1 for rec in self.log_records(site) if rec.get("event") == "serving")
        self._launch(site, "ab")
        self._wait_serving({site: served}, timeout, stop_all=False)
        return time.monotonic() - t0

    def _launch(self, site: str, mode: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        config = self.dir / "sites" / site / "agent.toml"
        with (self.log_dir / f"{site}.log").open(mode) as log:
            self.procs[site] = subprocess.Popen(
                [sys.executable, "-m", "site_agent.cli.agent", "serve", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def _wait_serving(self, served_before: Mapping[str, int], timeout: float, stop_all: bool) -> None:
        """Wait until each site logged one more "serving" than ``served_before`` says."""
        deadline = time.monotonic() + timeout
        waiting = set(served_before)
        while waiting:
            for site in list(waiting):
                if self.procs[site].poll() is not None:
                    if stop_all:
                        self.stop()
                    raise RuntimeError(f"agent {site} exited early:\n{self.log_tail(site)}")
                served = sum(1 for rec in self.log_records(site) if rec.get("event") == "serving")
                if served > served_before[site]:
                    waiting.discard(site)
            if time.monotonic() > deadline:
                if stop_all:
                    self.stop()
                raise TimeoutError(f"agents {sorted(waiting)} did not start within {timeout:g} s")
            time.sleep(0.05)

    def log_records(self, site: str) -> list[dict[str, object]]:
        """The agent's JSON log lines so far."""
        path = self.log_dir / f"{site}.log"
        records = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def log_tail(self, site: str, lines: int = 30) -> str:
        path = self.log_dir / f"{site}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kill(self, site: str) -> None:
        """Kill one agent abruptly (fault tests)."""
        self.procs[site].kill()
        self.procs[site].wait()

    def stop(self, timeout: float = 10.0) -> dict[str, int | None]:
        """SIGTERM every agent and wait; returns exit codes (None if it had to be killed)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for site, proc in self.procs.items():
            try:
                codes[site] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[site] = None
        return codes

    def __enter__(self) -> AgentProcesses:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
