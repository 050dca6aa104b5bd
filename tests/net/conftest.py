"""Fixtures for the network tests: a consortium CA, member certificates, and real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from site_agent.crypto.certs import issue_cert, make_ca
from site_agent.net.loopback import NAMES, free_ports, member_configs

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Pki:
    dir: Path

    def paths(self, name: str) -> dict[str, str]:
        return {
            "cert": str(self.dir / f"{name}.crt"),
            "key": str(self.dir / f"{name}.key"),
            "ca": str(self.dir / "ca.crt"),
        }


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One consortium CA with the three members and an analyst; a foreign CA with a rogue."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = make_ca("test consortium CA")
    (d / "ca.crt").write_bytes(ca_cert)
    hosts = ["127.0.0.1", "localhost"]
    for name in [*NAMES, "analyst"]:
        key, cert = issue_cert(ca_key, ca_cert, name, hosts, client=True, server=name != "analyst")
        (d / f"{name}.key").write_bytes(key)
        (d / f"{name}.crt").write_bytes(cert)
    other_key, other_cert = make_ca("some other CA")
    (d / "other-ca.crt").write_bytes(other_cert)
    key, cert = issue_cert(other_key, other_cert, NAMES[0], hosts, client=True, server=True)
    (d / "foreign.key").write_bytes(key)
    (d / "foreign.crt").write_bytes(cert)
    return Pki(d)


class Committee:
    """Three member processes (``python -m site_agent.net.loopback``) on loopback."""

    def __init__(self, pki: Pki, tmp: Path, jobs: list[dict[str, Any]], timeout: float = 10.0) -> None:
        self.ports = free_ports(3)
        self.procs: list[subprocess.Popen[str]] = []
        configs = member_configs(jobs, [pki.paths(name) for name in NAMES], timeout, self.ports)
        for i, cfg in enumerate(configs):
            path = tmp / f"member{i}.json"
            path.write_text(json.dumps(cfg))
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "site_agent.net.loopback", str(path)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )

    def read_line(self, i: int) -> dict[str, Any]:
        assert self.procs[i].stdout is not None
        line = self.procs[i].stdout.readline()
        if not line:
            raise AssertionError(f"member {i} exited: {self.procs[i].stderr.read() if self.procs[i].stderr else ''}")
        return json.loads(line)  # type: ignore[no-any-return]

    def wait(self, timeout: float = 60.0) -> list[list[dict[str, Any]]]:
        """All JSON lines of every member (after they exit)."""
        out = []
        deadline = time.monotonic() + timeout
        for p in self.procs:
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            lines = [json.loads(s) for s in stdout.splitlines() if s.strip()]
            assert p.returncode == 0, f"member exited {p.returncode}: {stderr[-3000:]}"
            out.append(lines)
        return out

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def committee(pki: Pki, tmp_path: Path) -> Iterator[Any]:
    made: list[Committee] = []

    def start(jobs: list[dict[str, Any]], timeout: float = 10.0) -> Committee:
        c = Committee(pki, tmp_path, jobs, timeout)
        made.append(c)
        return c

    yield start
    for c in made:
        c.kill()
