"""A member's part in preparing linkage keys: raise a site's blinded points to its key share.

A site running ``mpc-site-agent linkage prepare`` connects to every committee member with its
own TLS certificate and sends each member its blinded points H1(x)^r as one *batch*: ``LINKAGE``
frames of one session, a header then the points in as many frames as the frame limit needs
(:func:`batch_frames`; a batch larger than one frame is split, docs/linkage.md)::

    seq 0        uint64 [points, frames]          the batch's size, declared up front
    seq 1..F     uint64, 4 words per point        the points, in order, each frame non-empty

The member checks that the sender is a consortium site holding data, reassembles the batch
(:class:`Reassembly`: at most :data:`MAX_POINTS` points a batch and :data:`PENDING_BATCHES`
batches' worth under way, sequence numbers in order, sizes as declared; whatever fails drops
the batch's state at once), raises every point to its share k_i
(:func:`site_agent.linkage.oprf.evaluate`, which validates each point) in a worker thread, and
answers frame for frame: seq 1..F, each the same size as the site's frame of that number, so
the answer fits the same frame limit. The points are uniformly random group elements whatever
the identifiers, so the member learns the batch size and nothing else.

Every batch answered or refused is one signed entry of the member's audit log
(:func:`audit_entry`): the requesting site (its certificate's name), the number of points, the
decision and its reason, never a point. The transparency report counts them per site ("linkage
key requests", :mod:`site_agent.audit.report`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audit.entry import Reveal
from ..audit.log import AuditLog
from ..audit.report import LINKAGE_KIND
from ..errors import AuthError, MpcError, ProtocolViolation
from ..linkage import oprf
from ..linkage.statement import LinkageCompiled
from ..mpc.ring import U64
from ..net.framing import DEFAULT_MAX_FRAME, HEADER_BYTES, Frame, MsgType
from ..net.mesh import Connection
from ..privacy.ledger import Ledger, Membership

log = logging.getLogger("site_agent")

WORDS_PER_POINT = oprf.POINT_BYTES // 8
MAX_POINTS = 1 << 21
"""Points in one batch (64 MB, more than one frame at the default limit); a site with more
persons sends several batches, each audited on its own."""
PENDING_BATCHES = 4
"""Points under way at once, over every connection, in batches of the largest size: a bound on
what reassembly holds in memory (256 MB), whoever opens connections."""
POINTS_REVEAL = "linkage points raised to this member's key share, to the requesting site"


def points_per_frame(max_frame: int = DEFAULT_MAX_FRAME) -> int:
    """How many points one ``LINKAGE`` frame carries under the frame limit ``max_frame``."""
    per = (max_frame - HEADER_BYTES - 8) // oprf.POINT_BYTES
    if per < 1:
        raise ValueError(f"a frame limit of {max_frame} bytes holds no linkage point")
    return per


def batch_frames(message: bytes, session: bytes, sender: int, max_frame: int = DEFAULT_MAX_FRAME) -> list[Frame]:
    """A batch of blinded points (at most :data:`MAX_POINTS`) as its header frame and the point
    frames, each within ``max_frame`` bytes (the site's side; the member's answer has the same
    point frames)."""
    points = len(message) // oprf.POINT_BYTES
    if not 0 < points <= MAX_POINTS or len(message) % oprf.POINT_BYTES:
        raise ValueError(f"a linkage batch holds 1 to {MAX_POINTS} whole points")
    step = points_per_frame(max_frame) * oprf.POINT_BYTES
    chunks = [np.frombuffer(message[at : at + step], dtype="<u8") for at in range(0, len(message), step)]
    header = np.array([points, len(chunks)], dtype=np.uint64)
    return [
        Frame(MsgType.LINKAGE, session=session, sender=sender, seq=i, array=a) for i, a in enumerate([header, *chunks])
    ]


@dataclass
class Batch:
    """A batch being reassembled on one connection."""

    session: bytes
    points: int
    frames: int
    chunks: list[bytes] = field(default_factory=list)
    received: int = 0
    """Points received so far."""


class Reassembly:
    """The batches under way, one per connection at most, and what each frame does to them.

    Pure bookkeeping (no I/O): :meth:`take` returns the whole batch when its last frame arrived,
    None while frames are due, and raises :class:`ProtocolViolation` on anything out of order or
    out of bounds, after dropping the connection's state. State lives on the connection object
    (a weak key): a connection closed mid-batch leaves nothing behind."""

    def __init__(self, max_points: int = MAX_POINTS, max_pending: int = PENDING_BATCHES * MAX_POINTS) -> None:
        self.max_points = max_points
        self.max_pending = max_pending
        self._open: weakref.WeakKeyDictionary[object, Batch] = weakref.WeakKeyDictionary()

    def pending(self, conn: object) -> Batch | None:
        return self._open.get(conn)

    def drop(self, conn: object) -> None:
        self._open.pop(conn, None)

    def take(self, conn: object, frame: Frame) -> Batch | None:
        try:
            return self._take(conn, frame)
        except ProtocolViolation:
            self.drop(conn)
            raise

    def _take(self, conn: object, frame: Frame) -> Batch | None:
        arr = frame.array
        if arr is None or arr.dtype != np.dtype("<u8") or arr.ndim != 1:
            raise ProtocolViolation("a linkage frame is a 1-D uint64 array")
        batch = self._open.get(conn)
        if frame.seq == 0:
            if batch is not None:
                raise ProtocolViolation("a new linkage batch began before the last one was complete")
            if arr.size != 2:
                raise ProtocolViolation("a linkage batch begins with its size: [points, frames]")
            points, frames = int(arr[0]), int(arr[1])
            if not 0 < points <= self.max_points:
                raise ProtocolViolation(f"a linkage batch holds 1 to {self.max_points} points, not {points}")
            if not 0 < frames <= points:
                raise ProtocolViolation(f"a batch of {points} linkage points comes in 1 to {points} frames")
            if points + sum(b.points for b in self._open.values()) > self.max_pending:
                raise ProtocolViolation("too many linkage points under way at this member: try again later")
            self._open[conn] = Batch(frame.session, points, frames)
            return None
        if batch is None or frame.session != batch.session:
            raise ProtocolViolation("linkage points outside a batch (no size declared first)")
        if frame.seq != len(batch.chunks) + 1:
            raise ProtocolViolation(f"linkage frame {frame.seq} arrived where frame {len(batch.chunks) + 1} was due")
        if arr.size == 0 or arr.size % WORDS_PER_POINT:
            raise ProtocolViolation(f"a linkage frame carries whole points ({WORDS_PER_POINT} words each)")
        batch.received += arr.size // WORDS_PER_POINT
        if batch.received > batch.points:
            raise ProtocolViolation(f"more linkage points than the {batch.points} declared")
        batch.chunks.append(arr.tobytes())
        if len(batch.chunks) < batch.frames:
            return None
        self.drop(conn)
        if batch.received != batch.points:
            raise ProtocolViolation(f"{batch.received} linkage points arrived, {batch.points} declared")
        return batch


def audit_entry(audit: AuditLog, policy_digest: str, site: str, points: int, refused: str | None = None) -> None:
    """One signed, chained audit entry for a linkage key request: who asked (the certificate's
    name), how many points, and whether this member answered (else why not); never a point."""
    audit.append(
        analyst=site,
        query=f"linkage keys: {points} points",
        plan_digest=None,
        policy_digest=policy_digest,
        decision="accepted" if refused is None else "refused",
        reason=f"linkage keys: {points} points raised to this member's key share" if refused is None else refused,
        reveals=[Reveal(POINTS_REVEAL, (points,))] if refused is None else [],
        kind=LINKAGE_KIND,
    )


class LinkageEvaluator:
    """Answers sites' ``LINKAGE`` batches with this member's key share, auditing each."""

    def __init__(
        self,
        index: int,
        key_share: Callable[[], bytes],
        sites: Callable[[], tuple[str, ...]],
        audit: AuditLog,
        policy_digest: Callable[[], str],
        max_points: int = MAX_POINTS,
    ) -> None:
        self.index = index
        self.key_share = key_share  # loaded on first use: a member without one still serves queries
        self.sites = sites
        self.audit = audit
        self.policy_digest = policy_digest
        self.batches = Reassembly(max_points)
        self._refused: weakref.WeakKeyDictionary[Connection, bytes] = weakref.WeakKeyDictionary()
        """Per connection, the session of its last refused batch: its later frames are answered
        with an error but not audited again (one entry per batch)."""

    async def handle(self, conn: Connection, frame: Frame) -> None:
        """One frame of a batch; refusals are audited and answered here (the mesh sees none)."""
        if self._refused.get(conn) == frame.session and frame.seq > 0:
            await conn.reply_error("this linkage batch was refused", frame.session)
            return
        declared = self.batches.pending(conn)
        try:
            if conn.peer_name not in self.sites():
                raise AuthError(f"{conn.label} is not a consortium site holding data: it may not prepare linkage keys")
            batch = self.batches.take(conn, frame)  # synchronous: frames are taken in arrival order
            if batch is None:
                return
            answer = await asyncio.to_thread(
                oprf.evaluate, self.key_share(), b"".join(batch.chunks), self.batches.max_points
            )
        except MpcError as exc:
            self.batches.drop(conn)
            self._refused[conn] = frame.session
            points = declared.points if declared is not None else _declared(frame)
            audit_entry(self.audit, self.policy_digest(), conn.peer_name, points, f"linkage keys refused: {exc}")
            log.warning("linkage batch refused", extra={"event": "linkage_refused", "peer": conn.peer_name})
            await conn.reply_error(f"party {self.index} refused the linkage batch: {exc}", frame.session)
            return
        audit_entry(self.audit, self.policy_digest(), conn.peer_name, batch.points)
        log.info("linkage points evaluated", extra={"event": "linkage", "peer": conn.peer_name, "points": batch.points})
        at = 0
        for seq, chunk in enumerate(batch.chunks, start=1):
            reply = np.frombuffer(answer[at : at + len(chunk)], dtype="<u8")
            at += len(chunk)
            await conn.send_frame(
                Frame(MsgType.LINKAGE, session=batch.session, sender=self.index, seq=seq, array=reply)
            )


def _declared(frame: Frame) -> int:
    """The number of points a refused header frame declared (0 when it declared none)."""
    arr = frame.array
    if frame.seq == 0 and arr is not None and arr.ndim == 1 and arr.size == 2 and arr.dtype.kind == "u":
        return min(int(arr[0]), 2**63 - 1)
    return 0


def linkage_local(
    plan: LinkageCompiled, con: Any, keys_path: Path, holds_data: bool, ledger: Ledger, analyst: str
) -> tuple[Any, Membership | None, U64]:
    """A member's local step for a linkage statement (``COUNT(DISTINCT PERSON)``, a linked
    cohort): its input (the keys of the persons the WHERE selects; a linked cohort's records),
    its query sets, and their differences with the analyst's remembered sets
    (:meth:`LinkageCompiled.local`, :meth:`Ledger.differences`). Input None
    when any of it failed here (a missing keys file, the engine): then every member fails alike
    (:data:`site_agent.linkage.dedup.NO_KEYS`), naming no site, this one inputting as many
    differences as the others."""
    try:
        mine, members = plan.local(con, keys_path, holds_data)
        return mine, members, ledger.differences(analyst, members).reshape(-1).astype(np.uint64)
    except Exception as exc:
        log.warning("this site's linkage step failed (%s); every member fails", type(exc).__name__)
        return None, None, np.zeros(plan.query_sets * len(ledger.names(analyst)), dtype=np.uint64)
