"""The members' side of the relay: tunnels out, and a registration that brings tunnels in.

A tunnel is one websocket to the relay whose binary messages carry a byte stream. On this side
the stream is joined to a local socket, and websockets runs the member's ordinary mutual-TLS
connection over that socket, exactly as over TCP: the TLS handshake and every record go end to
end between the two members, through the relay.

* :func:`open_tunnel` (dialing a relayed member): returns one end of a ``socketpair``; pass it
  as ``sock=`` to ``websockets.asyncio.client.connect``, with the member's usual ``wss://``
  address (it names the host the certificate is checked against).
* :class:`Registration` (a relayed member's server): keeps a websocket to the relay open; for
  each tunnel the relay announces on it, opens the tunnel and joins it to a TCP connection to
  the member's own server on loopback, which does the TLS handshake as the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from site_agent.crypto.signing import is_lower_hex

log = logging.getLogger(__name__)

CHUNK = 2**18
"""Bytes read from the local socket per websocket message."""
RELAY_OPTIONS: dict[str, Any] = {"compression": None, "max_size": 2 * CHUNK, "ping_interval": 20, "ping_timeout": 60}
"""websockets options of every connection to or at the relay (TLS records do not compress)."""
RETRY_MAX = 5.0
"""The longest wait between two attempts to register at an unreachable relay."""

_tasks: set[asyncio.Task[None]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def join(ws: ClientConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes both ways between a tunnel websocket and a local stream until either side ends."""

    async def outward() -> None:
        while data := await reader.read(CHUNK):
            await ws.send(data)

    async def inward() -> None:
        async for message in ws:
            if isinstance(message, str):
                return  # tunnels carry bytes only
            writer.write(message)
            await writer.drain()

    tasks = [asyncio.ensure_future(outward()), asyncio.ensure_future(inward())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(Exception):
            await ws.close()


async def open_tunnel(relay: str, ssl_context: ssl.SSLContext, target: str, timeout: float = 20.0) -> socket.socket:
    """A socket whose bytes reach the member ``target`` through the relay at ``relay``.

    ``ssl_context`` authenticates this end to the relay (the member's or analyst's own client
    context). Raises ``OSError`` or a websockets error if the relay refuses (the target is not
    registered there, or this certificate is not admitted).
    """
    ws = await connect(f"{relay.rstrip('/')}/connect/{target}", ssl=ssl_context, open_timeout=timeout, **RELAY_OPTIONS)
    mine, theirs = socket.socketpair()
    mine.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=theirs)
    _spawn(join(ws, reader, writer))
    return mine


class Registration:
    """Keeps this member reachable at ``relay`` as the name of its certificate; every tunnel the
    relay announces is joined to ``127.0.0.1:local_port`` (the member's own TLS server)."""

    def __init__(self, relay: str, ssl_context: ssl.SSLContext, local_port: int) -> None:
        self.relay = relay.rstrip("/")
        self.ssl = ssl_context
        self.local_port = local_port
        self.registered = asyncio.Event()

    async def run(self) -> None:
        """Register, serve announcements, and register again after any loss, until cancelled."""
        delay = 0.2
        while True:
            try:
                async with connect(f"{self.relay}/register", ssl=self.ssl, **RELAY_OPTIONS) as ws:
                    log.info("registered at relay %s", self.relay, extra={"event": "relay_registered"})
                    self.registered.set()
                    delay = 0.2
                    async for message in ws:
                        tunnel = _announcement(message)
                        if tunnel is None:
                            log.warning("ignored a malformed message from relay %s", self.relay)
                            continue
                        _spawn(self._bring_in(tunnel))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever failed, keep this member reachable
                log.info(
                    "relay %s: %s; registering again in %.1f s",
                    self.relay,
                    str(exc) or type(exc).__name__,
                    delay,
                    extra={"event": "relay_lost"},
                )
            self.registered.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _bring_in(self, tunnel: str) -> None:
        try:
            ws = await connect(f"{self.relay}/accept/{tunnel}", ssl=self.ssl, **RELAY_OPTIONS)
            reader, writer = await asyncio.open_connection("127.0.0.1", self.local_port)
        except Exception as exc:
            log.warning("could not take up tunnel %s from relay %s: %s", tunnel[:8], self.relay, exc)
            return
        await join(ws, reader, writer)


def _announcement(message: str | bytes) -> str | None:
    """The tunnel id of a well-formed announcement ``{"tunnel": "<32 hex>"}``, else None."""
    try:
        body = json.loads(message)
    except (ValueError, TypeError):
        return None
    if not isinstance(body, dict) or set(body) != {"tunnel"}:
        return None
    tunnel = body["tunnel"]
    return tunnel if isinstance(tunnel, str) and is_lower_hex(tunnel, 16) else None
