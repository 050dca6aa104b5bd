"""The mesh server over real TLS websockets: bad frames are answered and the server keeps
serving; clients without a consortium certificate never get in."""

from __future__ import annotations

import asyncio
import socket
import ssl
from http import HTTPStatus
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from site_agent.crypto.certs import client_context, server_context
from site_agent.net.framing import Frame, MsgType, decode, encode
from site_agent.net.loopback import NAMES, _program, free_ports, members
from site_agent.net.mesh import CERTIFICATE_REQUIRED, Connection, Mesh, members_from

from .conftest import Pki


async def _meshes(pki: Pki, require_client_cert: bool = True) -> list[Mesh]:
    cfg = members_from(members(free_ports(3)))
    meshes = []
    for i in range(3):
        p = pki.paths(NAMES[i])
        server = server_context(p["cert"], p["key"], p["ca"], require_client_cert=require_client_cert)
        meshes.append(Mesh(i, cfg, server, client_context(p["cert"], p["key"], p["ca"])))
    await asyncio.gather(*(m.start() for m in meshes))
    return meshes


async def _session(meshes: list[Mesh], sid: bytes) -> list[Any]:
    job = {"op": "mul_fixed", "n": 1000, "seed": 5}
    return await asyncio.gather(*(m.run(sid, _program(job, m.index), 5.0) for m in meshes))


async def _rogue(pki: Pki, name: str, mesh: Mesh, frames: list[bytes]) -> list[str]:
    """Connect with ``name``'s certificate, send raw frames, collect the ERROR replies."""
    p = pki.paths(name)
    replies = []
    async with connect(mesh.me.uri, ssl=client_context(p["cert"], p["key"], p["ca"]), compression=None) as ws:
        for raw in frames:
            await ws.send(raw)
            reply = decode(await asyncio.wait_for(ws.recv(), 5.0))
            assert reply.type == MsgType.ERROR and reply.control is not None
            replies.append(reply.control["message"])
    return replies


def test_bad_frames_are_refused_and_the_server_keeps_serving(pki: Pki) -> None:
    async def scenario() -> tuple[list[str], list[str], list[Any]]:
        meshes = await _meshes(pki)
        try:
            first = await _session(meshes, b"A" * 16)
            good = encode(Frame(MsgType.MPC_DATA, b"A" * 16, 0, 0, array=np.arange(4, dtype=np.uint64)))
            # as member 0 (its certificate) to member 1
            as_member = await _rogue(
                pki,
                NAMES[0],
                meshes[1],
                [
                    good,  # session A is closed on member 1
                    encode(Frame(MsgType.MPC_DATA, b"B" * 16, 2, 0, array=np.arange(4, dtype=np.uint64))),
                    encode(Frame(MsgType.MPC_DATA, b"B" * 16, 0, 0, array=np.ones(4))),
                    good[:-5],
                    b"\x00" * 10,
                    encode(Frame(MsgType.QUERY, b"B" * 16, 0, 0, control={"kind": "error", "message": "x"})),
                ],
            )
            # an analyst (outsider) may not inject MPC data or claim a member's index
            as_outsider = await _rogue(
                pki,
                "analyst",
                meshes[1],
                [
                    encode(Frame(MsgType.MPC_DATA, b"B" * 16, 255, 0, array=np.arange(4, dtype=np.uint64))),
                    encode(Frame(MsgType.HELLO, sender=0, control={"kind": "hello", "index": 0, "name": "x"})),
                ],
            )
            second = await _session(meshes, b"C" * 16)  # the committee still works
            return as_member, as_outsider, [first, second]
        finally:
            await asyncio.gather(*(m.close() for m in meshes))

    as_member, as_outsider, runs = asyncio.run(scenario())
    assert "session 414141414141 is closed" in as_member[0]
    assert "claims sender 2" in as_member[1] and "party 0 (hospital-a)" in as_member[1]
    assert "1-D uint64" in as_member[2]
    assert "payload length" in as_member[3]
    assert "shorter than the 48-byte header" in as_member[4]
    assert "does not serve QUERY" in as_member[5]
    assert "claims sender 255" in as_outsider[0] or "non-member 'analyst'" in as_outsider[0]
    assert "claims sender 0" in as_outsider[1]
    for run in runs:
        assert all(np.array_equal(run[0], r) for r in run)


def test_handlers_are_pluggable_by_frame_type(pki: Pki) -> None:
    async def scenario() -> str:
        meshes = await _meshes(pki)
        seen: list[str] = []

        async def on_query(conn: Connection, frame: Frame) -> None:
            seen.append(conn.peer_name)
            await conn.send_frame(
                Frame(MsgType.STATUS, frame.session, 1, 0, control={"kind": "error", "message": "ok " + conn.peer_name})
            )

        meshes[1].on(MsgType.QUERY, on_query)
        try:
            p = pki.paths("analyst")
            async with connect(meshes[1].me.uri, ssl=client_context(p["cert"], p["key"], p["ca"])) as ws:
                await ws.send(encode(Frame(MsgType.QUERY, control={"kind": "error", "message": "q"})))
                reply = decode(await asyncio.wait_for(ws.recv(), 5.0))
            assert seen == ["analyst"]
            assert reply.control is not None
            return str(reply.control["message"])
        finally:
            await asyncio.gather(*(m.close() for m in meshes))

    assert asyncio.run(scenario()) == "ok analyst"


def _client_context(pki: Pki, certificate: str | None) -> ssl.SSLContext:
    """A TLS client that trusts the consortium CA and presents ``certificate`` (or none)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.paths(NAMES[0])["ca"])
    if certificate is not None:
        ctx.load_cert_chain(str(pki.dir / f"{certificate}.crt"), str(pki.dir / f"{certificate}.key"))
    return ctx


def test_a_client_without_a_certificate_is_refused_with_403_and_the_reason(pki: Pki) -> None:
    """As the site agent runs it (``require_client_cert=False``): the handshake completes and
    the application answers HTTP 403 with what to do, and reports the refusal (audit)."""

    async def scenario() -> tuple[InvalidStatus, list[tuple[str, str]], list[Any]]:
        meshes = await _meshes(pki, require_client_cert=False)
        refused: list[tuple[str, str]] = []
        meshes[1].on_refused(lambda who, why: refused.append((who, why)))
        try:
            with pytest.raises(InvalidStatus) as caught:
                async with connect(meshes[1].me.uri, ssl=_client_context(pki, None), open_timeout=5):
                    pass
            return caught.value, refused, await _session(meshes, b"D" * 16)
        finally:
            await asyncio.gather(*(m.close() for m in meshes))

    error, refused, run = asyncio.run(scenario())
    assert error.response.status_code == HTTPStatus.FORBIDDEN
    assert bytes(error.response.body or b"").decode() == CERTIFICATE_REQUIRED
    assert refused == [("(no client certificate)", "a TLS connection without a client certificate")]
    assert all(np.array_equal(run[0], r) for r in run)  # the committee still works


@pytest.mark.parametrize("require_client_cert", [True, False])
def test_a_certificate_from_another_ca_fails_the_tls_handshake(pki: Pki, require_client_cert: bool) -> None:
    """A certificate the consortium CA did not issue is refused by TLS itself: the server
    closes the connection without a single byte of HTTP (no 101, no 403), the websocket
    client reports that no HTTP response came, and the application never sees the client."""

    def raw_request(port: int) -> bytes:
        ctx = _client_context(pki, "foreign")
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            ctx.wrap_socket(sock, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return tls.recv(1024)

    async def scenario() -> tuple[bytes, InvalidMessage, list[tuple[str, str]], list[Any]]:
        meshes = await _meshes(pki, require_client_cert=require_client_cert)
        refused: list[tuple[str, str]] = []
        meshes[1].on_refused(lambda who, why: refused.append((who, why)))
        try:
            reply = await asyncio.to_thread(raw_request, meshes[1].me.port)
            with pytest.raises(InvalidMessage) as caught:
                async with connect(meshes[1].me.uri, ssl=_client_context(pki, "foreign"), open_timeout=5):
                    pass
            return reply, caught.value, refused, await _session(meshes, b"D" * 16)
        finally:
            await asyncio.gather(*(m.close() for m in meshes))

    reply, error, refused, run = asyncio.run(scenario())
    assert reply == b""
    assert str(error) == "did not receive a valid HTTP response"
    assert refused == []
    assert all(np.array_equal(run[0], r) for r in run)


def test_client_refuses_a_server_from_another_ca(pki: Pki) -> None:
    async def scenario() -> None:
        cfg = members_from(members(free_ports(3)))
        foreign = server_context(pki.dir / "foreign.crt", pki.dir / "foreign.key", pki.dir / "other-ca.crt")
        from websockets.asyncio.server import serve

        async def handler(ws: Any) -> None:
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", cfg[1].port, ssl=foreign):
            p = pki.paths(NAMES[0])
            with pytest.raises(ssl.SSLCertVerificationError):
                async with connect(cfg[1].uri, ssl=client_context(p["cert"], p["key"], p["ca"]), open_timeout=5):
                    pass

    asyncio.run(scenario())
