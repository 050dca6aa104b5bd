"""The relay in one process, spoken to directly: who may register, open and take up a tunnel,
and that a tunnel carries bytes unchanged both ways (what runs the members' TLS end to end)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from site_agent.cli.consortium import main as consortium_main
from site_agent.config import load_consortium, write_consortium
from site_agent.crypto.certs import client_context, issue_cert, server_context
from site_agent.crypto.signing import load_private_key
from site_agent.membership.changes import approve
from site_agent.membership.identity import REVOKED
from site_agent.relay.config import load_relay
from site_agent.relay.server import Relay
from site_agent.relay.tunnel import _announcement

SITES = ("site-a", "site-b", "site-c")


@pytest.fixture
def consortium(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    assert consortium_main(["init", str(d), "--name", "Relay test"]) == 0
    for i, site in enumerate(SITES):
        assert consortium_main(["add-site", str(d), site, "--address", f"127.0.0.1:{7101 + i}", "--compute"]) == 0
    assert consortium_main(["add-analyst", str(d), "alice"]) == 0
    assert consortium_main(["add-relay", str(d), "hub", "--address", "127.0.0.1:7199", "--sites", "site-b"]) == 0
    return d


def _ctx(d: Path, kind: str, name: str) -> ssl.SSLContext:
    tls = d / kind / name / "tls"
    return client_context(tls / "cert.pem", tls / "key.pem", tls / "ca.pem")


@contextlib.asynccontextmanager
async def running_relay(consortium: Path) -> AsyncIterator[str]:
    """The consortium's relay listening on a free port, for the duration of the block."""
    config = load_relay(consortium / "relays" / "hub" / "relay.toml")
    relay = Relay(
        load_consortium(config.consortium),
        server_context(config.tls_cert, config.tls_key, config.ca_cert, require_client_cert=False),
    )
    port = await relay.start("127.0.0.1", 0)
    yield f"wss://127.0.0.1:{port}"
    await relay.close()


def test_add_relay_writes_its_config_and_relays_the_named_sites(consortium: Path) -> None:
    cfg = load_consortium(consortium / "consortium.toml")
    assert cfg.sites["site-b"].relay == "wss://127.0.0.1:7199"
    assert cfg.sites["site-a"].relay is None
    text = (consortium / "sites" / "site-b" / "agent.toml").read_text()
    assert 'relay = "wss://127.0.0.1:7199"' in text and "\nlisten" not in text
    config = load_relay(consortium / "relays" / "hub" / "relay.toml")
    assert (config.name, str(config.listen)) == ("hub", "127.0.0.1:7199")


def test_a_tunnel_is_taken_up_only_by_its_target_and_carries_bytes_unchanged(consortium: Path) -> None:
    asyncio.run(_tunnel(consortium))


async def _tunnel(consortium: Path) -> None:
    async with (
        running_relay(consortium) as relay_uri,
        connect(f"{relay_uri}/register", ssl=_ctx(consortium, "sites", "site-b")) as registration,
    ):
        dialer = await connect(f"{relay_uri}/connect/site-b", ssl=_ctx(consortium, "analysts", "alice"))
        tunnel = _announcement(await asyncio.wait_for(registration.recv(), 5))
        assert tunnel is not None
        # Another member cannot take site-b's tunnel.
        thief = await connect(f"{relay_uri}/accept/{tunnel}", ssl=_ctx(consortium, "sites", "site-c"))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(thief.recv(), 5)
        assert closed.value.rcvd is not None and "no such tunnel" in closed.value.rcvd.reason
        taker = await connect(f"{relay_uri}/accept/{tunnel}", ssl=_ctx(consortium, "sites", "site-b"))
        payload = bytes(range(256)) * 64
        await dialer.send(payload)
        assert await asyncio.wait_for(taker.recv(), 5) == payload
        await taker.send(payload[::-1])
        assert await asyncio.wait_for(dialer.recv(), 5) == payload[::-1]
        await dialer.close()
        with pytest.raises(ConnectionClosed):  # closing one end closes the other
            await asyncio.wait_for(taker.recv(), 5)


def test_unregistered_targets_and_unknown_certificates_are_refused(consortium: Path) -> None:
    asyncio.run(_refusals(consortium))


async def _refusals(consortium: Path) -> None:
    async with running_relay(consortium) as relay_uri:
        await _refused(consortium, relay_uri)


async def _refused(consortium: Path, relay_uri: str) -> None:
    dialer = await connect(f"{relay_uri}/connect/site-a", ssl=_ctx(consortium, "sites", "site-c"))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(dialer.recv(), 5)
    assert closed.value.rcvd is not None and "not connected to the relay" in closed.value.rcvd.reason
    # A certificate the CA minted for a name the consortium does not register.
    ca = consortium / "ca"
    key, cert = issue_cert((ca / "ca.key").read_bytes(), (ca / "ca.pem").read_bytes(), "mallory", [], True, False)
    (consortium / "m.key").write_bytes(key)
    (consortium / "m.pem").write_bytes(cert)
    mallory = client_context(consortium / "m.pem", consortium / "m.key", ca / "ca.pem")
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{relay_uri}/register", ssl=mallory)
    assert b"not a member" in refused.value.response.body


@pytest.mark.parametrize(
    "message",
    ['{"tunnel": "00"}', '{"tunnel": "' + "a" * 32 + '", "x": 1}', "not json", '["tunnel"]', '{"tunnel": 5}'],
)
def test_malformed_announcements_are_ignored(message: str) -> None:
    assert _announcement(message) is None
    assert _announcement('{"tunnel": "' + "a" * 32 + '"}') == "a" * 32


def test_the_relay_closes_a_revoked_member_at_once(consortium: Path) -> None:
    """An approved revocation reaches the relay too: site-b's registration is closed, naming why."""
    assert consortium_main(["revoke", str(consortium), "site-b"]) == 0
    (path,) = consortium.glob("change-v1-revoke-site-b.toml")
    change = load_consortium(path)
    for site in ("site-a", "site-c"):
        change = approve(change, site, load_private_key(consortium / "sites" / site / "signing" / "key.pem"))

    async def scenario() -> str:
        async with running_relay(consortium) as relay_uri:
            registration = await connect(f"{relay_uri}/register", ssl=_ctx(consortium, "sites", "site-b"))
            write_consortium(replace(change, path=consortium / "consortium.toml"))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(registration.recv(), 5)
            return closed.value.rcvd.reason if closed.value.rcvd else ""

    assert asyncio.run(scenario()).startswith(REVOKED)
