"""Run one party's sans-I/O :class:`PartyMachine` over network links to its two peers.

The engine's protocols only say "send this array to party j, expect n words from party k".
:func:`run_party` turns that into frames on links and feeds what arrives back to the
machine, checking for every incoming frame: the session id, that the sender index in the
header is the peer the link is authenticated as (its TLS identity), the per-direction
sequence number, the message type and the dtype/shape. A peer that sends nothing for
``timeout`` seconds while the machine waits for it fails the run with
:class:`PeerTimeout` naming it; a closed link gives :class:`PeerDisconnected`. On any
failure the party tells its peers (an ERROR frame for the session) so they stop at once
instead of waiting for their own timeout.

A *link* is anything with ``async send(parts)`` and ``async recv() -> bytes``: a
websocket wrapper (:class:`WebSocketLink`) or one session's channel of a shared
connection (:mod:`site_agent.net.mesh`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import (
    PeerDisconnected,
    PeerFailure,
    PeerTimeout,
    PlanMismatch,
    ProtocolError,
    ProtocolViolation,
    QueryRefused,
)
from ..mpc.party import PartyMachine
from .framing import DEFAULT_MAX_FRAME, Frame, MsgType, decode, encode_parts, error_frame

T = TypeVar("T")
log = logging.getLogger(__name__)

Parts = Sequence[bytes | memoryview]
_SILENCE = 2 / 3  # share of the timeout after which a silent peer's neighbours abort


class Link(Protocol):
    """One authenticated, ordered, reliable message pipe to a peer."""

    async def send(self, parts: Parts) -> None:
        """Send one frame given as consecutive byte chunks (header, payload)."""

    async def recv(self) -> bytes:
        """The next whole frame from the peer; raises :class:`PeerFailure` when it is gone."""
        ...


class WebSocketLink:
    """A :class:`Link` over one websockets connection (no session multiplexing).

    ``peer`` is the committee index the connection was authenticated as. Frames go out as
    one binary websocket message of two fragments (header, payload view), so the array
    is never concatenated with its header on the sending side.
    """

    def __init__(self, ws: Any, peer: int, name: str = "") -> None:
        self.ws = ws
        self.peer = peer
        self.name = name or f"party {peer}"

    async def send(self, parts: Parts) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send(websocket_message(parts))
        except ConnectionClosed as exc:
            raise PeerDisconnected(self.peer, f"connection to {self.name} closed: {exc}") from None

    async def recv(self) -> bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            data = await self.ws.recv()
        except ConnectionClosed as exc:
            raise PeerDisconnected(self.peer, f"connection to {self.name} closed: {exc}") from None
        if isinstance(data, str):
            raise ProtocolViolation(f"{self.name} sent a text websocket message; frames are binary")
        return bytes(data)


JOIN_BELOW = 1 << 18
"""Frames smaller than this (256 KiB) are joined into one websocket frame."""


def websocket_message(parts: Parts) -> bytes | memoryview | list[bytes | memoryview]:
    """One websocket message from a frame's (header, payload) chunks.

    A small frame is joined into one chunk: one websocket frame, one TLS record, one send
    system call. Sending header and payload as fragments costs a system call each (and a
    wake-up of the receiver), which dominated the time of many-round protocols with small
    messages. A large frame goes as fragments, so its payload is never copied.
    """
    chunks = [p for p in parts if len(p)]
    if len(chunks) == 1:
        return chunks[0]
    if sum(len(c) for c in chunks) < JOIN_BELOW:
        return b"".join(chunks)
    return chunks


def session_label(session: bytes) -> str:
    """Short printable form of a session id for messages and logs."""
    return session.hex()[:12]


async def run_party(
    machine: PartyMachine[T],
    links: Mapping[int, Link],
    session_id: bytes,
    timeout: float,
    *,
    names: Mapping[int, str] | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> T:
    """Drive ``machine`` to completion over ``links`` (peer index -> link); return its result.

    ``timeout`` bounds how long the party waits for a peer it needs (and for a send to a
    peer to be taken). After two thirds of it without progress a party tells its peers
    whom it is waiting for (a ``waiting`` notice); a party whose own peer turns out to be
    stuck on a third member blames that member, so everybody names the one that went
    silent. ``names`` gives peers' display names for error messages.
    """
    me = machine.index
    peers = sorted(links)
    label = {p: (f"party {p} ({names[p]})" if names and p in names else f"party {p}") for p in peers}
    seq_out = dict.fromkeys(peers, 0)
    seq_in = dict.fromkeys(peers, 0)
    pending: dict[int, asyncio.Task[bytes]] = {}
    blame: dict[int, int] = {}  # peer -> the member it reported waiting for
    closed: set[int] = set()  # peers whose link closed while the protocol did not need them
    try:
        while True:
            try:
                await _flush(machine, links, session_id, seq_out, timeout, label, max_frame)
            except PeerDisconnected as exc:
                # The peer may have quit because it aborted; its ERROR frame, if any, is queued
                # ahead of the close on the same link and says why.
                lost = exc.peer if isinstance(exc.peer, int) and exc.peer in links else None
                if lost is None:
                    raise
                reason = await _abort_reason(links[lost], pending.pop(lost, None))
                if reason is None:
                    raise
                raise PeerDisconnected(lost, f"party {me}: {label[lost]} aborted the session: {reason}") from None
            if machine.done:
                return machine.result
            step = machine.local_step
            if step is not None:  # the site's own data, off the event loop (site_agent.mpc.party.LocalStep)
                machine.complete_local(await asyncio.to_thread(step.run))
                continue
            waiting = [p for p in machine.waiting_for if p in links]
            if not waiting:
                missing = sorted(set(machine.waiting_for) - set(links))
                raise ProtocolError(f"party {me}: protocol waits for parties {missing} with no link")
            await _receive_some(
                machine, links, pending, waiting, session_id, seq_in, timeout, label, max_frame, blame, closed
            )
    except BaseException as exc:
        for task in pending.values():
            task.cancel()
        # A refusal or plan mismatch in the agreement round is seen by every member in that same
        # round; an abort notice would only race the refusing member's own verdict at the third.
        if isinstance(exc, Exception) and not isinstance(exc, (QueryRefused, PlanMismatch)):
            await notify_abort(links, session_id, me, f"{label.get(me, f'party {me}')} aborted: {exc}")
        raise
    finally:
        for task in pending.values():
            task.cancel()


async def _receive_some(
    machine: PartyMachine[Any],
    links: Mapping[int, Link],
    pending: dict[int, asyncio.Task[bytes]],
    waiting: list[int],
    session: bytes,
    seq_in: dict[int, int],
    timeout: float,
    label: Mapping[int, str],
    max_frame: int,
    blame: dict[int, int],
    closed: set[int],
) -> None:
    """Wait for at least one data frame from the peers the machine waits for; feed it.

    Every link is read, not only the awaited ones: a peer that already delivered this round
    may abort meanwhile, and that must end the session now, naming it. Data it sends ahead is
    fed to the machine, which keeps it for the round it belongs to. A link that merely closes
    is different: a peer that has finished the protocol may disconnect while this member
    still waits for another, so a closed link (remembered in ``closed``) fails the session
    only once the protocol waits for that peer.
    """
    me = machine.index
    loop = asyncio.get_running_loop()
    start = loop.time()
    noticed = False
    while True:
        lost = [p for p in waiting if p in closed]
        if lost:
            raise PeerDisconnected(lost[0], f"party {me}: connection to {label[lost[0]]} closed")
        for p in links:
            if p not in pending and p not in closed:
                pending[p] = asyncio.ensure_future(links[p].recv())
        now = loop.time()
        stall_at, give_up = start + timeout * _SILENCE, start + timeout
        limit = (stall_at if not noticed else give_up) - now
        done, _ = await asyncio.wait(list(pending.values()), timeout=max(limit, 0), return_when="FIRST_COMPLETED")
        fed = False
        for p in [q for q in links if q in pending and pending[q].done()]:
            if machine.done:
                break
            try:
                data = pending.pop(p).result()
            except PeerDisconnected:
                if p in waiting:
                    raise
                closed.add(p)
                continue
            frame = decode(data, max_frame)
            if frame.type == MsgType.SESSION_STATUS and frame.session == session and frame.sender == p:
                assert frame.control is not None
                blame[p] = int(frame.control["waiting_for"])
                continue
            frame = _check(frame, p, me, session, seq_in[p], label[p])
            seq_in[p] += 1
            blame.pop(p, None)
            machine.receive(p, frame.array)  # type: ignore[arg-type]
            fed = fed or p in waiting
        if fed:
            return
        if done:
            continue
        if not noticed:
            noticed = True
            notice = Frame(
                MsgType.SESSION_STATUS,
                session,
                me,
                0,
                control={"kind": "waiting", "waiting_for": waiting[0]},
            )
            for link in links.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(link.send(encode_parts(notice)), 0.5)
            continue
        silent = waiting[0]
        culprit = blame.get(silent, silent)
        if culprit == me or culprit not in label:
            culprit = silent
        why = "" if culprit == silent else f" ({label[silent]} is waiting for it)"
        raise PeerTimeout(
            culprit,
            f"party {me}: no message from {label[culprit]} within {timeout:g} s{why} "
            f"(session {session_label(session)})",
        )


def _check(frame: Frame, peer: int, me: int, session: bytes, seq: int, label: str) -> Frame:
    """Validate an incoming frame against what this link and session allow."""
    if frame.session != session:
        raise ProtocolViolation(
            f"party {me}: frame for session {session_label(frame.session)} arrived on session "
            f"{session_label(session)}'s link from {label}"
        )
    if frame.sender != peer:
        raise ProtocolViolation(f"party {me}: frame claims sender {frame.sender} but the link is {label}")
    if frame.type == MsgType.ERROR:
        reason = frame.control["message"] if frame.control else "?"
        raise PeerDisconnected(peer, f"party {me}: {label} aborted the session: {reason}")
    if frame.type != MsgType.MPC_DATA:
        raise ProtocolViolation(f"party {me}: unexpected {frame.type.name} frame from {label} during the protocol")
    arr = frame.array
    if arr is None or arr.dtype != np.uint64 or arr.ndim != 1:
        raise ProtocolViolation(f"party {me}: MPC data from {label} is not a 1-D uint64 array")
    if frame.seq != seq:
        raise ProtocolViolation(f"party {me}: frame {frame.seq} from {label} out of order (expected {seq})")
    return frame


async def _flush(
    machine: PartyMachine[Any],
    links: Mapping[int, Link],
    session: bytes,
    seq_out: dict[int, int],
    timeout: float,
    label: Mapping[int, str],
    max_frame: int,
) -> None:
    """Send everything the machine has queued; peers in parallel, each peer in order."""
    by_peer: dict[int, list[Parts]] = {}
    for peer, arr in machine.outgoing():
        if peer not in links:
            raise ProtocolError(f"party {machine.index}: protocol sends to party {peer} with no link")
        frame = Frame(MsgType.MPC_DATA, session, machine.index, seq_out[peer], array=arr)
        seq_out[peer] += 1
        by_peer.setdefault(peer, []).append(encode_parts(frame, max_frame))
    if not by_peer:
        return

    async def send_all(peer: int, frames: list[Parts]) -> None:
        try:
            for parts in frames:
                await asyncio.wait_for(links[peer].send(parts), timeout)
        except TimeoutError:
            raise PeerTimeout(
                peer, f"party {machine.index}: {label[peer]} did not take a message within {timeout:g} s"
            ) from None

    await asyncio.gather(*(send_all(p, f) for p, f in by_peer.items()))


async def _abort_reason(link: Link, pending: asyncio.Task[bytes] | None, grace: float = 0.5) -> str | None:
    """Skim what a lost peer still had queued for an ERROR frame; return its message."""
    for _ in range(64):
        try:
            if pending is not None:
                data = await asyncio.wait_for(pending, grace)
                pending = None
            else:
                data = await asyncio.wait_for(link.recv(), grace)
            frame = decode(data)
        except (Exception, asyncio.CancelledError):
            return None
        if frame.type == MsgType.ERROR and frame.control is not None:
            return str(frame.control["message"])
    return None


async def notify_abort(links: Mapping[int, Link], session: bytes, me: int, reason: str) -> None:
    """Best effort: tell every peer this session is over, so it fails now, not at its timeout."""
    parts = encode_parts(error_frame(reason, session, me))
    for peer, link in links.items():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.send(parts), 1.0)
            log.debug("told party %d that session %s aborted", peer, session_label(session))


__all__ = ["Link", "PeerFailure", "WebSocketLink", "notify_abort", "run_party", "session_label"]
