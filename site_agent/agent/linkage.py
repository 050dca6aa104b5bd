"""A member's part in preparing linkage keys: raise a site's blinded points to its key share.

A site running ``mpc-site-agent linkage prepare`` connects to every committee member with its
own TLS certificate and sends one ``LINKAGE`` frame: its blinded points H1(x)^r as a uint64
array (4 words per point). The member checks that the sender is a consortium site holding data,
raises every point to its share k_i (:func:`site_agent.linkage.oprf.evaluate`, which validates
each point) in a worker thread, and answers with one ``LINKAGE`` frame of the same size. The
points are uniformly random group elements whatever the identifiers, so the member learns the
batch size and nothing else (docs/linkage.md). It logs who asked and how many points, never a
point.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from ..errors import AuthError, ProtocolViolation
from ..linkage import oprf
from ..net.framing import Frame, MsgType
from ..net.mesh import Connection

log = logging.getLogger("site_agent")

WORDS_PER_POINT = oprf.POINT_BYTES // 8
MAX_POINTS = 1_000_000
"""Points in one request (32 MB); a site sends larger batches in several requests."""


class LinkageEvaluator:
    """Answers sites' ``LINKAGE`` requests with this member's key share."""

    def __init__(self, index: int, key_share: Callable[[], bytes], sites: Callable[[], tuple[str, ...]]) -> None:
        self.index = index
        self.key_share = key_share  # loaded on first use: a member without one still serves queries
        self.sites = sites

    async def handle(self, conn: Connection, frame: Frame) -> None:
        if conn.peer_name not in self.sites():
            raise AuthError(f"{conn.label} is not a consortium site holding data: it may not prepare linkage keys")
        arr = frame.array
        if arr is None or arr.dtype != np.dtype("<u8") or arr.ndim != 1 or arr.size % WORDS_PER_POINT:
            raise ProtocolViolation(f"a linkage request is a 1-D uint64 array of {WORDS_PER_POINT} words per point")
        key = self.key_share()
        answer = await asyncio.to_thread(oprf.evaluate, key, arr.tobytes(), MAX_POINTS)
        log.info(
            "linkage points evaluated",
            extra={"event": "linkage", "peer": conn.peer_name, "points": arr.size // WORDS_PER_POINT},
        )
        reply = np.frombuffer(answer, dtype="<u8").astype(np.uint64)
        await conn.send_frame(Frame(MsgType.LINKAGE, session=frame.session, sender=self.index, array=reply))
