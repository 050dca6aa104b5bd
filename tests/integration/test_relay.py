"""Issue 15: three agents and an analyst that reach each other only through a relay.

The agents are real processes with no inbound port (``[site] relay`` instead of ``listen``);
the relay runs in the test process, so a test can make it misbehave: it flips a bit of one
message, sends one twice, holds one past the query timeout, or swaps two. The members' TLS
sessions run end to end through it, so each of these must make the query fail cleanly --
no DataFrame, no accepted audit entry anywhere -- and the next query must work again.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from websockets.asyncio.server import ServerConnection

from mpc_jupyter.client import Consortium, QueryFailed, SiteUnavailable
from mpc_jupyter.demo.consortium import AgentProcesses, build_consortium
from site_agent.cli.consortium import main as consortium_main
from site_agent.config import load_agent, load_consortium
from site_agent.crypto.certs import server_context
from site_agent.net.loopback import free_ports
from site_agent.relay.server import Relay, Route

from ..lung import LUNG_SCHEMA, lung_by_site
from .conftest import FAULT_TIMEOUT, SITES, Running, _sites

COUNT = "SELECT COUNT(*) AS n FROM lung"
BY_SEX = "SELECT sex, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY sex"


class ScriptedRelay(Relay):
    """A relay that passes everything on, except the first agent-to-agent message after
    :meth:`arm`, which it tampers with, replays, delays or reorders."""

    mode = ""
    held: tuple[Route, bytes] | None = None
    done = 0
    """How many misbehaviours were carried out (each arm() is one)."""

    def arm(self, mode: str) -> None:
        self.held = None
        self.mode = mode

    async def deliver(self, route: Route, data: bytes, to: ServerConnection) -> None:
        between_agents = route.source in SITES and route.target in SITES
        if not self.mode or not between_agents:
            await to.send(data)
            return
        mode = self.mode
        if mode != "reorder":
            self.done += 1
        if mode == "tamper":
            self.mode = ""
            middle = len(data) // 2
            await to.send(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :])
        elif mode == "replay":
            self.mode = ""
            await to.send(data)
            await to.send(data)
        elif mode == "delay":
            self.mode = ""
            await asyncio.sleep(FAULT_TIMEOUT + 3)
            await to.send(data)
        elif mode == "reorder":  # hold this one, send it after the next one on the same route
            if self.held is None:
                self.held = (route, data)
                return
            held_route, held = self.held
            await to.send(data)
            if held_route == route:
                self.mode = ""
                self.done += 1
                await to.send(held)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, ScriptedRelay]]:
    root = tmp_path_factory.mktemp("relay")
    frames = lung_by_site()
    config = build_consortium(root / "consortium", _sites(root / "data", frames, {}), LUNG_SCHEMA)
    (port,) = free_ports(1)
    assert (
        consortium_main(["add-relay", str(config.parent), "relay", "--address", f"127.0.0.1:{port}", "--sites", *SITES])
        == 0
    )
    for site in SITES:
        path = config.parent / "sites" / site / "agent.toml"
        path.write_text(
            path.read_text().replace("query_timeout_seconds = 30", f"query_timeout_seconds = {FAULT_TIMEOUT}")
        )
    tls = config.parent / "relays" / "relay" / "tls"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    relay = ScriptedRelay(
        load_consortium(config),
        server_context(tls / "cert.pem", tls / "key.pem", tls / "ca.pem", require_client_cert=False),
    )
    asyncio.run_coroutine_threadsafe(relay.start("127.0.0.1", port), loop).result(10)
    procs = AgentProcesses(config.parent, list(SITES))
    running = Running(config, procs, frames)
    try:
        procs.start()
        yield running, relay
    finally:
        running.close()
        asyncio.run_coroutine_threadsafe(relay.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _answers(client: Consortium, query: str) -> pd.DataFrame | None:
    try:
        return client.query(query)
    except (QueryFailed, SiteUnavailable):
        return None


def _eventually(client: Consortium, query: str, timeout: float = 30.0) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while True:
        out = _answers(client, query)
        if out is not None or time.monotonic() > deadline:
            assert out is not None, f"no answer through the relay within {timeout} s"
            return out
        time.sleep(0.5)


def test_agents_listen_nowhere_and_answers_equal_pandas(relayed: tuple[Running, ScriptedRelay]) -> None:
    running, relay = relayed
    cfg = running.consortium
    for site in SITES:
        assert load_agent(running.agent_toml(site)).listen is None
        assert cfg.sites[site].relay == f"wss://127.0.0.1:{relay._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        address = cfg.sites[site].address
        with pytest.raises(ConnectionRefusedError):  # nobody listens at the registered address
            socket.create_connection((address.host, address.port), timeout=2).close()
    pooled = running.pooled
    assert _eventually(running.client, COUNT)["n"].tolist() == [len(pooled)]
    got = running.client.query(BY_SEX).set_index("sex").sort_index()
    ref = pooled.groupby("sex")
    assert got["n"].tolist() == ref.size().tolist()
    assert got["mean_age"].round(6).tolist() == ref.age.mean().round(6).tolist()


@pytest.mark.parametrize("mode", ["tamper", "replay", "reorder", "delay"])
def test_a_misbehaving_relay_makes_queries_fail_cleanly(relayed: tuple[Running, ScriptedRelay], mode: str) -> None:
    running, relay = relayed
    client = running.client
    _eventually(client, COUNT)  # links up, a clean start
    before, done = running.audit_counts(), relay.done
    relay.arm(mode)
    with pytest.raises((QueryFailed, SiteUnavailable)):
        client.query(COUNT)
    assert relay.done == done + 1  # the relay did misbehave, on the query's traffic
    relay.arm("")
    for site in SITES:
        entries = running.wait_audit(site, before[site], timeout=FAULT_TIMEOUT + 10)
        assert entries and all(e["decision"] != "accepted" for e in entries), (site, entries)
    # The links are re-made through the same relay and the next query is answered, correctly.
    assert _eventually(client, COUNT)["n"].tolist() == [len(running.pooled)]


def test_direct_and_relayed_members_mix(tmp_path: Path) -> None:
    """South is reached through ``mpc-relay serve`` (a real process); north and central listen
    as before. Every pair of members and the analyst find each other; answers equal pandas."""
    frames = lung_by_site()
    config = build_consortium(tmp_path / "consortium", _sites(tmp_path / "data", frames, {}), LUNG_SCHEMA)
    (port,) = free_ports(1)
    assert (
        consortium_main(["add-relay", str(config.parent), "hub", "--address", f"127.0.0.1:{port}", "--sites", "south"])
        == 0
    )
    cfg = load_consortium(config)
    assert [cfg.sites[s].relay for s in SITES] == [None, None, f"wss://127.0.0.1:{port}"]
    log = (tmp_path / "relay.log").open("wb")
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "site_agent.cli.relay",
            "serve",
            "--config",
            str(config.parent / "relays" / "hub" / "relay.toml"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    running = Running(config, AgentProcesses(config.parent, list(SITES)), frames)
    try:
        running.procs.start()
        assert _eventually(running.client, COUNT)["n"].tolist() == [len(running.pooled)]
        got = running.client.query(BY_SEX).set_index("sex").sort_index()
        assert got["n"].tolist() == running.pooled.groupby("sex").size().tolist()
    finally:
        running.close()
        relay.terminate()
        relay.wait(10)
        log.close()
    assert relay.returncode == 0
