"""``mpc-relay serve``: pairs members' tunnels and copies their bytes, seeing no data.

Every connection to the relay is mutual TLS with a certificate from the consortium CA that the
consortium file registers (the same :func:`~site_agent.membership.identity.admission` rule as
the agents', so a revoked certificate is refused here too, naming the reason). Three kinds of
websocket, by path:

* ``/register``: a member that accepts no inbound connection keeps this open; the relay
  announces each tunnel for it as ``{"tunnel": "<id>"}`` (the only message it ever sends).
* ``/connect/NAME``: somebody wants a byte stream to member NAME. The relay announces a new
  tunnel id on NAME's registration and waits (``ANNOUNCE_SECONDS``) for
* ``/accept/ID``: NAME (and only NAME) taking the tunnel up. From then on every binary
  message of one side is sent to the other, in order, until either side closes.

What crosses a tunnel is the two members' own end-to-end TLS 1.3 session, so the relay learns
who talks to whom, when, and how many bytes; never a share, a query or a result. The relay keeps
no state beyond its open connections. :meth:`Relay.deliver` is the single place a message is
passed on (tests replace it with a relay that tampers, replays or delays).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from site_agent.config import ConsortiumConfig, load_consortium
from site_agent.crypto.certs import peer_common_name, peer_fingerprint, server_context
from site_agent.errors import AuthError
from site_agent.membership.identity import admission
from site_agent.membership.watch import ConsortiumWatcher

from .config import RelayConfig
from .tunnel import RELAY_OPTIONS

log = logging.getLogger("site_agent.relay")

ANNOUNCE_SECONDS = 10.0
"""How long a ``/connect`` waits for the target to take its tunnel up."""


@dataclass(frozen=True)
class Route:
    """One direction of one tunnel: from ``source`` to ``target`` (certificate names)."""

    tunnel: str
    source: str
    target: str


@dataclass
class _Pending:
    target: str
    taken: asyncio.Future[ServerConnection]
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Relay:
    """The relay's state: who is registered, tunnels being set up, every open connection."""

    def __init__(self, consortium: ConsortiumConfig, server_ssl: ssl.SSLContext) -> None:
        self.consortium = consortium
        self.server_ssl = server_ssl
        self.registered: dict[str, ServerConnection] = {}
        self.pending: dict[str, _Pending] = {}
        self.connections: dict[ServerConnection, tuple[str, str]] = {}
        self.watcher = ConsortiumWatcher(consortium.path, lambda: self.consortium, self._membership_changed)
        self._server: Server | None = None
        self._watching: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: RelayConfig) -> Relay:
        ctx = server_context(config.tls_cert, config.tls_key, config.ca_cert, require_client_cert=False)
        return cls(load_consortium(config.consortium), ctx)

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port) and follow the consortium file; the port."""
        self._server = await serve(
            self._handle, host, port, ssl=self.server_ssl, process_request=self._admit, **RELAY_OPTIONS
        )
        self._watching = asyncio.create_task(self.watcher.run())
        return int(self._server.sockets[0].getsockname()[1])

    async def serve(self, host: str, port: int, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        port = await self.start(host, port)
        log.info("relay serving", extra={"event": "serving", "address": f"{host}:{port}"})
        await stop.wait()
        await self.close()

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def deliver(self, route: Route, data: bytes, to: ServerConnection) -> None:
        """Pass one message of ``route`` on, unchanged (an honest relay)."""
        await to.send(data)

    # --- connections ---------------------------------------------------------------------

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        ssl_object = connection.transport.get_extra_info("ssl_object")
        try:
            name = peer_common_name(ssl_object)
        except AuthError as exc:
            return connection.respond(HTTPStatus.FORBIDDEN, f"{exc}\n")
        reason = admission(self.consortium, name, peer_fingerprint(ssl_object))
        if reason is not None:
            log.warning("refused %s: %s", name, reason, extra={"event": "refused"})
            return connection.respond(HTTPStatus.FORBIDDEN, f"{reason}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        ssl_object = ws.transport.get_extra_info("ssl_object")
        name = peer_common_name(ssl_object)
        self.connections[ws] = (name, peer_fingerprint(ssl_object))
        try:
            kind, _, arg = ws.request.path.strip("/").partition("/") if ws.request else ("", "", "")
            if kind == "register" and not arg:
                await self._register(ws, name)
            elif kind == "connect" and arg:
                await self._connect(ws, name, arg)
            elif kind == "accept" and arg:
                await self._accept(ws, name, arg)
            else:
                await ws.close(1008, "unknown relay path")
        finally:
            del self.connections[ws]

    async def _register(self, ws: ServerConnection, name: str) -> None:
        old = self.registered.get(name)
        self.registered[name] = ws
        if old is not None:
            await old.close(1000, "registered again")
        log.info("%s registered", name, extra={"event": "registered", "peer": name})
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass  # registrations carry nothing inward
        if self.registered.get(name) is ws:
            del self.registered[name]

    async def _connect(self, ws: ServerConnection, source: str, target: str) -> None:
        registration = self.registered.get(target)
        if registration is None:
            await ws.close(1011, f"{target} is not connected to the relay")
            return
        tunnel = secrets.token_hex(16)
        pending = _Pending(target, asyncio.get_running_loop().create_future())
        self.pending[tunnel] = pending
        try:
            await registration.send(json.dumps({"tunnel": tunnel}))
            other = await asyncio.wait_for(pending.taken, ANNOUNCE_SECONDS)
        except (TimeoutError, ConnectionClosed):
            await ws.close(1011, f"{target} did not take the tunnel up")
            return
        finally:
            self.pending.pop(tunnel, None)
        try:
            await asyncio.gather(
                self._forward(Route(tunnel, source, target), ws, other),
                self._forward(Route(tunnel, target, source), other, ws),
            )
        finally:
            pending.done.set()

    async def _accept(self, ws: ServerConnection, name: str, tunnel: str) -> None:
        pending = self.pending.get(tunnel)
        if pending is None or pending.target != name or pending.taken.done():
            await ws.close(1008, "no such tunnel for this certificate")
            return
        pending.taken.set_result(ws)
        await pending.done.wait()

    async def _forward(self, route: Route, src: ServerConnection, dst: ServerConnection) -> None:
        """Every binary message of ``src`` to ``dst`` in order; closing one side closes both."""
        try:
            async for data in src:
                if isinstance(data, bytes):
                    await self.deliver(route, data, dst)
        except ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(Exception):
                await dst.close()
            with contextlib.suppress(Exception):
                await src.close()

    async def _membership_changed(self, old: ConsortiumConfig, new: ConsortiumConfig, signers: set[str]) -> None:
        """Follow an approved consortium version: close the connections it refuses."""
        self.consortium = new
        for ws, (name, fp) in list(self.connections.items()):
            reason = admission(new, name, fp)
            if reason is not None:
                log.warning("closing %s: %s", name, reason, extra={"event": "refused"})
                with contextlib.suppress(Exception):
                    await ws.close(1008, reason[:120])
