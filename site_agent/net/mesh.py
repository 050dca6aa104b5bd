"""The committee mesh: one TLS websocket per pair of members, sessions multiplexed on it.

Each member runs a websockets server (mutual TLS 1.3, consortium CA) and dials the members
with a higher index; it accepts the lower ones. A peer is identified by its certificate's
common name only: a committee CN maps to its committee index, anything else is an
*outsider* (an analyst or an input-only site) whose frames go to handlers the daemon
registers by message type (:meth:`Mesh.on`). MPC frames (``MPC_DATA``, ``SESSION_KEY``,
session ``ERROR``) from committee members are routed by session id to per-session
channels by a :class:`Dispatcher`, so concurrent sessions never see each other's messages.

Every incoming frame is fully validated on arrival (strict :func:`decode`, sender index in
the header equal to the TLS identity, MPC data 1-D ``uint64``). A bad frame is answered
with an ERROR frame saying why and dropped; the connection and the server keep serving.
Frames for a session this member has not opened yet are buffered (bounded in sessions,
bytes and age), because members open a session at slightly different times; frames for a
session already closed are refused with an ERROR, never dropped silently.

Who may connect is decided again by the daemon's ``admit`` callback (certificate name and
fingerprint -> None, or the reason to refuse): a certificate the CA issued but the consortium
revoked since is refused during the HTTP upgrade (403 with the reason) or, on a link this
member dials, right after the handshake. :meth:`Mesh.recheck` applies a new answer to every
open connection at once, closing the ones now refused with the reason (close code 1008).

A member may be reachable through a relay only (``Member.relay``, see :mod:`site_agent.relay`):
it is then dialed through a tunnel, with the same end-to-end mutual TLS; and a mesh given
``relay`` registers there and serves the tunnels the relay brings in on a loopback port.

Lost links come back on their own: the member that dials a peer (the lower index) re-dials
it in the background with a bounded backoff (:data:`REDIAL_FIRST` doubling to
:data:`REDIAL_MAX` seconds) for as long as the mesh runs, so one member can restart while the
other two keep serving. A lost link fails the open sessions that need it with
:class:`PeerDisconnected`; sessions opened while a link is down fail at once naming the peer.
Whoever uses the mesh hears of every link coming up or going down through
:meth:`Mesh.on_link_up` and :meth:`Mesh.on_link_down` (the daemon re-sends its policy on
every link-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..crypto.certs import peer_common_name, peer_fingerprint
from ..errors import AuthError, ConfigError, MpcError, PeerDisconnected, ProtocolViolation
from ..mpc.party import Party, Protocol
from ..relay.tunnel import Registration, open_tunnel
from .framing import (
    DEFAULT_MAX_FRAME,
    NO_SESSION,
    OUTSIDER,
    Frame,
    MsgType,
    decode,
    decode_header,
    encode_parts,
    error_frame,
)
from .mpc_transport import Parts, session_label, websocket_message
from .session import run_session

T = TypeVar("T")
log = logging.getLogger(__name__)

SESSION_TYPES = frozenset({MsgType.MPC_DATA, MsgType.SESSION_KEY, MsgType.SESSION_STATUS})
WS_OPTIONS: dict[str, Any] = {"compression": None, "ping_interval": 20, "ping_timeout": 60, "write_limit": 2**20}
"""websockets options for every mesh connection. permessage-deflate is off: random shares
do not compress and deflate makes them about 50x slower."""
REDIAL_FIRST = 0.2
"""Seconds before the first re-dial of a lost or unreachable peer; doubles per failed attempt."""
REDIAL_MAX = 5.0
"""The longest wait between two dials of a peer that stays unreachable."""


CERTIFICATE_REQUIRED = (
    "client certificate required: connect with a certificate issued by the consortium CA "
    "(mpc-consortium add-analyst makes one)\n"
)
"""What a client that connects without a certificate is told (HTTP 403)."""


@dataclass(frozen=True)
class Member:
    """A committee member: index 0..2, certificate common name, where its server listens."""

    index: int
    name: str
    host: str
    port: int
    relay: str | None = None
    """The relay this member is reached through (None: dial ``uri`` directly)."""

    @property
    def uri(self) -> str:
        return f"wss://{self.host}:{self.port}"


class Connection:
    """One authenticated websocket connection, accepted or dialed.

    ``peer_name`` is the certificate CN; ``peer_index`` the committee index for members,
    None for outsiders.
    """

    def __init__(self, ws: Any, peer_name: str, peer_index: int | None, my_index: int, fingerprint: str = "") -> None:
        self.ws = ws
        self.peer_name = peer_name
        self.fingerprint = fingerprint
        self.peer_index = peer_index
        self.my_index = my_index
        self.was_up = False  # a committee link once both hellos were exchanged
        self.up_since = time.monotonic()

    @property
    def label(self) -> str:
        return f"party {self.peer_index} ({self.peer_name})" if self.peer_index is not None else self.peer_name

    async def send(self, parts: Parts) -> None:
        """Send one frame given as (header, payload) chunks, as one websocket message."""
        try:
            await self.ws.send(websocket_message(parts))
        except ConnectionClosed as exc:
            raise PeerDisconnected(
                self.peer_index if self.peer_index is not None else self.peer_name,
                f"connection to {self.label} closed: {exc}",
            ) from None

    async def send_frame(self, frame: Frame) -> None:
        await self.send(encode_parts(frame))

    async def reply_error(self, message: str, session: bytes = NO_SESSION) -> None:
        """Best effort ERROR frame back to the peer."""
        with contextlib.suppress(Exception):
            await self.send_frame(error_frame(message, session, self.my_index))


Handler = Callable[[Connection, Frame], Awaitable[None]]
"""A handler for one message type: gets the connection (to reply) and the decoded frame."""
LinkUp = Callable[[int, Connection], Awaitable[None]]
"""Called (as a task) each time the link to a committee peer comes up, with the new connection."""
LinkDown = Callable[[int], None]
"""Called each time the link to a committee peer is lost."""
Refused = Callable[[str, str], None]
"""Told of every frame or connection the mesh refuses: (who, by certificate name; why)."""
Admit = Callable[[str, str], str | None]
"""Whether a certificate (common name, SHA-256 fingerprint) may connect: None, or why not."""


class SessionChannel:
    """One session's :class:`~site_agent.net.mpc_transport.Link` to one committee peer."""

    def __init__(self, mesh: Mesh, peer: int) -> None:
        self._mesh = mesh
        self.peer = peer
        self.queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()

    async def send(self, parts: Parts) -> None:
        conn = self._mesh.links.get(self.peer)
        if conn is None:
            raise PeerDisconnected(self.peer, f"no connection to {self._mesh.label(self.peer)}")
        await conn.send(parts)

    async def recv(self) -> bytes:
        item = await self.queue.get()
        if isinstance(item, BaseException):
            self.queue.put_nowait(item)  # stay failed for later readers
            raise item
        return item


class Dispatcher:
    """Routes session frames from committee peers to the channels of open sessions."""

    def __init__(
        self,
        mesh: Mesh,
        max_pending_sessions: int = 64,
        max_pending_bytes: int = 512 * 2**20,
        pending_ttl: float = 120.0,
        remember_closed: int = 4096,
    ) -> None:
        self._mesh = mesh
        self._open: dict[bytes, dict[int, SessionChannel]] = {}
        self._pending: OrderedDict[bytes, tuple[float, list[tuple[int, bytes]]]] = OrderedDict()
        self._pending_bytes = 0
        self._closed: OrderedDict[bytes, None] = OrderedDict()
        self.max_pending_sessions = max_pending_sessions
        self.max_pending_bytes = max_pending_bytes
        self.pending_ttl = pending_ttl
        self.remember_closed = remember_closed

    def open(self, session: bytes) -> dict[int, SessionChannel]:
        """Channels for a new session (frames that arrived early are delivered now)."""
        if session in self._open or session in self._closed:
            raise ValueError(f"session {session_label(session)} was already used on this member")
        chans = {p: SessionChannel(self._mesh, p) for p in self._mesh.peers}
        self._open[session] = chans
        _, early = self._pending.pop(session, (0.0, []))
        for peer, data in early:
            self._pending_bytes -= len(data)
            chans[peer].queue.put_nowait(data)
        for p in self._mesh.peers:
            if p not in self._mesh.links:
                chans[p].queue.put_nowait(PeerDisconnected(p, f"no connection to {self._mesh.label(p)}"))
        return chans

    def close(self, session: bytes) -> None:
        """Forget a session; later frames for it are refused."""
        self._open.pop(session, None)
        self._closed[session] = None
        while len(self._closed) > self.remember_closed:
            self._closed.popitem(last=False)

    def deliver(self, peer: int, frame_type: MsgType, session: bytes, data: bytes) -> None:
        """Route one validated frame; raises ProtocolViolation when it cannot be accepted."""
        chans = self._open.get(session)
        if chans is not None:
            chans[peer].queue.put_nowait(data)
            return
        if session in self._closed:
            if frame_type in (MsgType.ERROR, MsgType.SESSION_STATUS):
                log.info("late error from party %d for closed session %s", peer, session_label(session))
                return
            raise ProtocolViolation(f"session {session_label(session)} is closed on party {self._mesh.index}")
        self._expire()
        entry = self._pending.get(session)
        if entry is None and len(self._pending) >= self.max_pending_sessions:
            raise ProtocolViolation(
                f"party {self._mesh.index} has {len(self._pending)} sessions pending; refusing session "
                f"{session_label(session)}"
            )
        if self._pending_bytes + len(data) > self.max_pending_bytes:
            raise ProtocolViolation(f"party {self._mesh.index}: pending frames exceed {self.max_pending_bytes} bytes")
        if entry is None:
            entry = (time.monotonic(), [])
            self._pending[session] = entry
        entry[1].append((peer, data))
        self._pending_bytes += len(data)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending:
            session, (born, frames) = next(iter(self._pending.items()))
            if now - born < self.pending_ttl:
                break
            self._pending.popitem(last=False)
            self._pending_bytes -= sum(len(d) for _, d in frames)
            log.warning("dropped %d frames of session %s never opened here", len(frames), session_label(session))

    def peer_lost(self, peer: int, exc: PeerDisconnected) -> None:
        """Fail every open session's channel to ``peer``."""
        for chans in self._open.values():
            chans[peer].queue.put_nowait(exc)


class Mesh:
    """A committee member's server plus its links to the two other members.

    ``members`` lists all three members (including this one). ``server_ssl`` must require
    client certificates (``certs.server_context``); ``client_ssl`` verifies servers
    (``certs.client_context``). ``max_frame`` is the largest websocket message accepted.
    """

    def __init__(
        self,
        index: int,
        members: Sequence[Member],
        server_ssl: ssl.SSLContext,
        client_ssl: ssl.SSLContext,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        connect_timeout: float = 20.0,
        listen_host: str | None = None,
        admit: Admit | None = None,
        listen_port: int | None = None,
        relay: str | None = None,
    ) -> None:
        if sorted(m.index for m in members) != [0, 1, 2]:
            raise ConfigError("a committee has exactly members 0, 1 and 2")
        if len({m.name for m in members}) != 3:
            raise ConfigError("committee members need distinct certificate names")
        self.index = index
        self.members = {m.index: m for m in members}
        self.me = self.members[index]
        self.peers = [p for p in (0, 1, 2) if p != index]
        self._by_name = {m.name: m.index for m in members}
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout
        self.listen_host = listen_host or self.me.host
        self.listen_port = self.me.port if listen_port is None else listen_port
        self.relay = relay
        self.admit: Admit = admit or (lambda name, fingerprint: None)
        self.links: dict[int, Connection] = {}
        self.connections: set[Connection] = set()
        """Every open connection, accepted or dialed (what :meth:`recheck` walks)."""
        self.dispatcher = Dispatcher(self)
        self.handlers: dict[MsgType, Handler] = {}
        self._link_up = {p: asyncio.Event() for p in self.peers}
        self._up_listeners: list[LinkUp] = []
        self._down_listeners: list[LinkDown] = []
        self._refused_listeners: list[Refused] = []
        self._down_since: dict[int, float] = {}
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # --- public API --------------------------------------------------------------------

    def label(self, peer: int) -> str:
        return f"party {peer} ({self.members[peer].name})"

    @property
    def names(self) -> dict[int, str]:
        return {i: m.name for i, m in self.members.items()}

    def on(self, frame_type: MsgType, handler: Handler) -> None:
        """Handle frames of ``frame_type`` (from members or outsiders) with ``handler``.

        Handlers run as tasks, so a slow one never stalls the connection's reader. MPC
        session types are routed by the dispatcher and cannot be overridden.
        """
        if frame_type in SESSION_TYPES or frame_type in (MsgType.HELLO, MsgType.ERROR):
            raise ValueError(f"{frame_type.name} frames are handled by the mesh itself")
        self.handlers[frame_type] = handler

    def on_link_up(self, listener: LinkUp) -> None:
        """Call ``listener(peer, connection)`` each time a link to a committee peer comes up."""
        self._up_listeners.append(listener)

    def on_link_down(self, listener: LinkDown) -> None:
        """Call ``listener(peer)`` each time the link to a committee peer is lost."""
        self._down_listeners.append(listener)

    def on_refused(self, listener: Refused) -> None:
        """Call ``listener(who, why)`` for each frame or connection refused before any handler
        saw it (the daemon writes them to its audit log)."""
        self._refused_listeners.append(listener)

    def _refused(self, who: str, why: str) -> None:
        for listener in self._refused_listeners:
            listener(who, why)

    def missing(self) -> list[int]:
        """The committee peers this member has no link to right now."""
        return [p for p in self.peers if p not in self.links]

    async def start(self, *, require_links: bool = True) -> None:
        """Listen, dial the higher-index members, and wait up to ``connect_timeout`` for both links.

        With ``require_links`` a link still missing then closes the mesh and raises
        :class:`PeerDisconnected`; without it the mesh serves anyway (sessions needing the
        missing peer fail naming it) and the links come up whenever the peers do: this member
        keeps dialing the higher-index ones, the lower-index ones keep dialing it.
        """
        self._server = await serve(
            self._accept,
            self.listen_host,
            self.listen_port,
            ssl=self.server_ssl,
            max_size=self.max_frame,
            process_request=self._require_client_certificate,
            **WS_OPTIONS,
        )
        if self.relay is not None:
            local_port = int(self._server.sockets[0].getsockname()[1])
            self._spawn(Registration(self.relay, self.client_ssl, local_port).run())
        started = time.monotonic()
        for p in self.peers:
            self._down_since[p] = started
            if p > self.index:
                self._spawn(self._keep_dialing(self.members[p]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._link_up.values())), self.connect_timeout)
        missing = self.missing()
        if not missing:
            return
        names = ", ".join(self.label(p) for p in missing)
        if require_links:
            await self.close()
            raise PeerDisconnected(
                missing[0], f"party {self.index}: no link to {names} within {self.connect_timeout:g} s"
            )
        log.warning(
            "no link to %s after %.1f s; serving without it and waiting for it to come up",
            names,
            time.monotonic() - started,
            extra={"event": "links_missing", "peers": [self.members[p].name for p in missing]},
        )

    async def close(self) -> None:
        """Stop the server and close every connection (and stop re-dialing)."""
        self._closing = True
        for conn in list(self.links.values()):
            with contextlib.suppress(Exception):
                await conn.ws.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    @contextlib.asynccontextmanager
    async def session(self, session_id: bytes) -> AsyncIterator[dict[int, SessionChannel]]:
        """Open a session's channels (peer -> link) for the duration of the block."""
        chans = self.dispatcher.open(session_id)
        try:
            yield chans
        finally:
            self.dispatcher.close(session_id)

    async def run(self, session_id: bytes, program: Callable[[Party], Protocol[T]], timeout: float) -> T:
        """Run one MPC session as this member: key set-up, then ``program`` to completion."""
        async with self.session(session_id) as links:
            return await run_session(self.index, links, session_id, program, timeout, self.names)

    async def recheck(self) -> None:
        """Ask ``admit`` again about every open connection; close the ones it now refuses,
        telling the peer why (an ERROR frame, then close code 1008 with the reason)."""
        for conn in list(self.connections):
            reason = self.admit(conn.peer_name, conn.fingerprint)
            if reason is None:
                continue
            log.warning("closing the connection of %s: %s", conn.label, reason, extra={"event": "refused"})
            self._refused(conn.peer_name, reason)
            await conn.reply_error(reason)
            with contextlib.suppress(Exception):
                await conn.ws.close(1008, reason[:120])

    # --- connections -------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _require_client_certificate(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse, with a reason the client can read, a TLS connection that presented no certificate.

        The agent's TLS context lets such a handshake finish (a certificate that is presented is
        still verified against the consortium CA during the handshake), so the refusal arrives
        as an HTTP 403 instead of a silently dropped connection.
        """
        ssl_object = connection.transport.get_extra_info("ssl_object")
        if ssl_object is None or not ssl_object.getpeercert(binary_form=True):
            log.warning("refused a connection without a client certificate")
            self._refused("(no client certificate)", "a TLS connection without a client certificate")
            return connection.respond(HTTPStatus.FORBIDDEN, CERTIFICATE_REQUIRED)
        try:
            cn = peer_common_name(ssl_object)
        except AuthError as exc:
            return connection.respond(HTTPStatus.FORBIDDEN, f"{exc}\n")
        reason = self.admit(cn, peer_fingerprint(ssl_object))
        if reason is not None:
            log.warning("refused a connection from %s: %s", cn, reason, extra={"event": "refused"})
            self._refused(cn, reason)
            return connection.respond(HTTPStatus.FORBIDDEN, f"{reason}\n")
        return None

    async def _accept(self, ws: ServerConnection) -> None:
        ssl_object = ws.transport.get_extra_info("ssl_object")
        try:
            cn = peer_common_name(ssl_object)
        except AuthError as exc:
            log.warning("refused connection: %s", exc)
            return
        index = self._by_name.get(cn)
        if index == self.index:
            index = None  # our own name from elsewhere is not a peer
        await self._read_loop(Connection(ws, cn, index, self.index, peer_fingerprint(ssl_object)))

    async def _keep_dialing(self, member: Member) -> None:
        """Dial ``member`` and serve the link; when it is lost or cannot be made, dial again.

        Waits between attempts start at :data:`REDIAL_FIRST` seconds and double up to
        :data:`REDIAL_MAX` while attempts fail; a link that stayed up at least
        :data:`REDIAL_MAX` seconds resets them (one that keeps dropping at once backs off too).
        Runs until the mesh closes.
        """
        delay = REDIAL_FIRST
        attempt = 0
        while not self._closing:
            attempt += 1
            try:
                up_for = await self._dial(member)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever failed, this loop must keep the link coming back
                up_for = None
                # log attempts 1, 2, 4, 8, ... and every 60th: a peer down for hours must not flood the log
                if attempt & (attempt - 1) == 0 or attempt % 60 == 0:
                    log.info(
                        "cannot reach %s at %s (attempt %d): %s; next try in %.1f s",
                        self.label(member.index),
                        member.uri,
                        attempt,
                        str(exc) or type(exc).__name__,
                        delay,
                        extra={"event": "dial_failed", "peer": member.name, "attempt": attempt},
                    )
            if self._closing:
                return
            if up_for is not None:
                if up_for >= REDIAL_MAX:
                    delay = REDIAL_FIRST
                attempt = 0
                log.info(
                    "re-dialing %s in %.1f s",
                    self.label(member.index),
                    delay,
                    extra={"event": "redial", "peer": member.name},
                )
            await asyncio.sleep(delay)
            if up_for is None or up_for < REDIAL_MAX:
                delay = min(delay * 2, REDIAL_MAX)

    async def _dial(self, member: Member) -> float | None:
        """One connection to ``member``, served until it closes; the seconds the link was up
        (None if the peer never answered the hello)."""
        tunnel = None
        if member.relay is not None:
            tunnel = await open_tunnel(member.relay, self.client_ssl, member.name, self.connect_timeout)
        try:
            ws = await connect(
                member.uri,
                sock=tunnel,
                ssl=self.client_ssl,
                max_size=self.max_frame,
                open_timeout=self.connect_timeout,
                **WS_OPTIONS,
            )
        except BaseException:
            if tunnel is not None:
                tunnel.close()  # ends the tunnel at the relay too
            raise
        ssl_object = ws.transport.get_extra_info("ssl_object")
        cn = peer_common_name(ssl_object)
        if cn != member.name:
            await ws.close()
            raise AuthError(f"server at {member.uri} presented {cn!r}, expected {member.name!r}")
        fp = peer_fingerprint(ssl_object)
        reason = self.admit(cn, fp)
        if reason is not None:
            self._refused(cn, reason)
            await ws.close(1008, reason[:120])
            raise AuthError(f"server at {member.uri}: {reason}")
        conn = Connection(ws, cn, member.index, self.index, fp)
        await conn.send_frame(
            Frame(
                MsgType.HELLO, control={"kind": "hello", "index": self.index, "name": self.me.name}, sender=self.index
            )
        )
        await self._read_loop(conn)
        return time.monotonic() - conn.up_since if conn.was_up else None

    async def _read_loop(self, conn: Connection) -> None:
        self.connections.add(conn)
        try:
            async for data in conn.ws:
                if isinstance(data, str):
                    self._refused(conn.peer_name, "a text websocket message")
                    await conn.reply_error("frames are binary websocket messages")
                    continue
                try:
                    await self._dispatch(conn, data)
                except MpcError as exc:
                    log.warning("bad frame from %s: %s", conn.label, exc)
                    self._refused(conn.peer_name, f"a frame: {exc}")
                    await conn.reply_error(f"party {self.index} refused a frame: {exc}")
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(conn)
            p = conn.peer_index
            if p is not None and self.links.get(p) is conn:
                self._lost(p, conn)

    def _lost(self, p: int, conn: Connection) -> None:
        """The current link to ``p`` closed: fail the sessions that need it and tell the listeners."""
        del self.links[p]
        self._link_up[p].clear()
        self._down_since[p] = time.monotonic()
        log.warning(
            "link to %s lost after %.1f s%s",
            self.label(p),
            time.monotonic() - conn.up_since,
            "" if self._closing else ("; re-dialing it" if p > self.index else "; waiting for it to dial again"),
            extra={"event": "link_lost", "peer": self.members[p].name},
        )
        self.dispatcher.peer_lost(p, PeerDisconnected(p, f"party {self.index}: connection to {self.label(p)} closed"))
        for listener in self._down_listeners:
            try:
                listener(p)
            except Exception as exc:
                log.warning("link-down listener failed for %s: %s", self.label(p), exc)

    async def _dispatch(self, conn: Connection, data: bytes) -> None:
        head = decode_header(data, self.max_frame)
        expected = conn.peer_index if conn.peer_index is not None else OUTSIDER
        if head.sender != expected:
            raise ProtocolViolation(
                f"frame claims sender {head.sender} but the connection is authenticated as {conn.label}"
            )
        if head.type in SESSION_TYPES and conn.peer_index is None:
            raise ProtocolViolation(f"{head.type.name} frames from non-member {conn.peer_name!r} are refused")
        frame = decode(data, self.max_frame)
        if head.type == MsgType.MPC_DATA:
            arr = frame.array
            if arr is None or arr.dtype.kind != "u" or arr.dtype.itemsize != 8 or arr.ndim != 1:
                raise ProtocolViolation(
                    f"MPC data must be a 1-D uint64 array, got {head.dtype.name.lower()} {head.dims}"
                )
        if head.type in SESSION_TYPES or (
            head.type == MsgType.ERROR and conn.peer_index is not None and head.session != NO_SESSION
        ):
            assert conn.peer_index is not None
            self.dispatcher.deliver(conn.peer_index, head.type, head.session, data)
        elif head.type == MsgType.HELLO:
            await self._hello(conn, frame)
        elif head.type == MsgType.ERROR:
            log.warning("error from %s: %s", conn.label, frame.control["message"] if frame.control else "?")
        elif head.type in self.handlers:
            self._spawn(self._run_handler(conn, frame))
        else:
            raise ProtocolViolation(f"party {self.index} does not serve {head.type.name} frames")

    async def _hello(self, conn: Connection, frame: Frame) -> None:
        assert frame.control is not None
        p = conn.peer_index
        if p is None:
            raise ProtocolViolation(f"{conn.peer_name!r} is not a committee member")
        if frame.control["index"] != p or frame.control["name"] != conn.peer_name:
            raise ProtocolViolation(f"hello claims party {frame.control['index']} but the certificate is {conn.label}")
        if p > self.index:
            # our own dial came back: the link is up on both ends
            if self.links.get(p) is not None and self.links[p] is not conn:
                raise ProtocolViolation(f"{conn.label} answered a hello on a second link")
            self.links[p] = conn
        else:
            old = self.links.get(p)
            if old is not None and old is not conn:
                # the peer dialed again (it restarted, or lost the link before we noticed)
                self._lost(p, old)
                with contextlib.suppress(Exception):
                    await old.ws.close()
            self.links[p] = conn
            await conn.send_frame(
                Frame(
                    MsgType.HELLO,
                    sender=self.index,
                    control={"kind": "hello", "index": self.index, "name": self.me.name},
                )
            )
        if conn.was_up:
            return
        conn.was_up = True
        conn.up_since = time.monotonic()
        down = conn.up_since - self._down_since.get(p, conn.up_since)
        log.info(
            "link to %s up (%s; %.1f s without it)",
            self.label(p),
            "dialed" if p > self.index else "accepted",
            down,
            extra={"event": "link_up", "peer": self.members[p].name, "seconds": round(down, 3)},
        )
        self._link_up[p].set()
        for listener in self._up_listeners:
            self._spawn(self._notify_up(listener, p, conn))

    async def _notify_up(self, listener: LinkUp, p: int, conn: Connection) -> None:
        try:
            await listener(p, conn)
        except Exception as exc:
            log.warning("link-up listener failed for %s: %s", self.label(p), exc)

    async def _run_handler(self, conn: Connection, frame: Frame) -> None:
        try:
            await self.handlers[frame.type](conn, frame)
        except Exception as exc:
            log.warning("handler for %s from %s failed: %s", frame.type.name, conn.label, exc)
            if isinstance(exc, MpcError):  # refused on purpose (a malformed envelope, a forbidden message)
                self._refused(conn.peer_name, f"a {frame.type.name} frame: {exc}")
            await conn.reply_error(f"party {self.index} could not handle {frame.type.name}: {exc}", frame.session)


def members_from(config: Sequence[Mapping[str, Any]]) -> list[Member]:
    """Members from plain dicts (``index``, ``name``, ``host``, ``port``, optional ``relay``)."""
    return [
        Member(int(m["index"]), str(m["name"]), str(m["host"]), int(m["port"]), m.get("relay")) for m in config
    ]
