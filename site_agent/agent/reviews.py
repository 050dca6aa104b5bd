"""Output review at a committee member: hold results as shares, follow the DPOs' decisions,
release what every reviewing site approved, discard the rest.

The flow (docs/review-and-report.md):

1. A plan whose combined policy names reviewing sites (``[privacy] review = "dpo"``: every
   result; ``"failing"``: a result where the release rule withheld a cell) carries them in its
   digest, so every member agrees before any share moves. After the MPC program, when the
   plan's terms say so from public facts (``ReviewTerms.reviewers``), each member keeps its own
   pair of shares of the outputs on its disk (``ReviewStore``), writes a ``held`` audit entry
   and answers the analyst ``pending`` instead of sending shares.
2. A DPO decides with ``mpc-site-agent review approve|deny ID`` (edits the store under its
   lock). This member's ``poll`` notices its own site's decision, writes the audit entry and
   sends it to the other members (``review_decision``, on the authenticated member links; sent
   again each time a link comes up, so a member that was down learns it). A member takes a
   peer's decision only from that peer's own link, and only if the peer is a reviewing site.
3. Once every reviewing site approved, the analyst's ``review_fetch`` gets each member's
   shares with the public metadata and a receipt of the ``released`` audit entry (written at
   the first fetch). The member keeps its shares until the analyst's client confirms receipt
   (``review_confirm``), so a fetch cut off midway can be repeated: it sends the same shares
   with the same receipt, never anything else. A denial, or the deadline (``review_hours``
   after the query was signed, the same instant at every member), deletes them: nothing is
   ever released. An approved result not confirmed ``keep_hours`` after the last approval
   (decision times travel with the decisions: the same instant at every member) is deleted too.

A member never opens a held result: it has two of the three share components, as during the
computation, and sends them only to the analyst who asked the query.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..audit import AuditLog, Receipt, Reveal
from ..audit.entry import Decision
from ..crypto.envelope import Envelope
from ..crypto.signing import is_lower_hex
from ..errors import AuthError, ReviewError
from ..net.framing import Frame, MsgType
from ..net.mesh import Connection, Mesh
from ..review import store as review_store
from ..review.store import APPROVED, DENIED, EXPIRED, PENDING, RELEASED, Held, ReviewStore
from . import messages as msg
from . import planning

log = logging.getLogger("site_agent")

POLL_SECONDS = 1.0
"""How often the member looks for its DPO's decisions and for deadlines."""
KEEP_SECONDS = 30 * 86400.0
"""How long after its deadline a closed result's facts stay in the store (for ``review list
--all`` and the analyst's "denied" line); its shares are gone at closing already."""


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


class ReviewDesk:
    """One member's side of output review (see the module docstring)."""

    def __init__(
        self,
        site: str,
        index: int,
        store: ReviewStore,
        audit: AuditLog,
        mesh: Mesh,
        policy_digest: Callable[[], str],
        peers: Callable[[], list[str]],
    ) -> None:
        self.site, self.index, self.store, self.audit, self.mesh = site, index, store, audit, mesh
        self._policy_digest = policy_digest
        self._peers = peers
        self._fetching = asyncio.Lock()
        """One fetch at a time: two concurrent first fetches would write two ``released`` entries."""

    # --- holding ----------------------------------------------------------------------------

    async def hold(
        self,
        env: Envelope,
        plan: planning.Compiled,
        sites: list[str],
        shares: np.ndarray,
        meta: dict[str, Any],
        seconds: float,
    ) -> tuple[Held, Receipt]:
        """Keep this member's shares of a computed result for review by ``sites``; its ``held``
        audit entry. The cells' bands and the release rule's own flags are for the DPOs only."""
        review = plan.review
        assert review is not None and sites, "only plans with reviewing sites are held"
        _, _, hours, keep_hours = review
        held = Held(
            id=env.digest(),
            analyst=env.analyst,
            query=env.query,
            plan_digest=plan.digest,
            kind=plan.kind,
            meta={k: v for k, v in meta.items() if k not in ("bands", "withheld")},
            bands=list(meta.get("bands", [])),
            withheld=meta.get("withheld"),
            reveals=[{"name": r.name, "shape": list(r.shape)} for r in plan.reveals],
            sites=sites,
            created=float(env.timestamp),
            deadline=float(env.timestamp) + hours * 3600.0,
            keep_hours=keep_hours,
        )
        await asyncio.to_thread(self.store.hold, held, shares)
        receipt = self.audit.append(
            analyst=env.analyst,
            query=env.query,
            plan_digest=plan.digest,
            policy_digest=self._policy_digest(),
            decision="accepted",
            reason=f"held for review at {', '.join(sites)} until {_when(held.deadline)}; nothing released yet",
            peers=self._peers(),
            timings={"seconds": round(seconds, 4)},
            kind=plan.kind,
            review=self._review_field(held, "held"),
        )
        return held, receipt

    @staticmethod
    def _review_field(held: Held, action: str) -> dict[str, Any]:
        return {"id": held.id, "action": action, "sites": held.sites}

    def _record(
        self, held: Held, action: str, decision: Decision, reason: str, reveals: Sequence[Reveal] = ()
    ) -> Receipt:
        """The audit entry of one step of ``held``'s review at this member."""
        return self.audit.append(
            analyst=held.analyst,
            query=held.query,
            plan_digest=held.plan_digest,
            policy_digest=self._policy_digest(),
            decision=decision,
            reason=reason,
            reveals=reveals,
            peers=self._peers(),
            kind=held.kind,
            review=self._review_field(held, action),
        )

    # --- decisions and deadlines ------------------------------------------------------------

    async def run(self) -> None:
        """Poll for this site's decisions and for deadlines until cancelled."""
        while True:
            try:
                await self.poll(time.time())
            except Exception as exc:  # a damaged record must not stop the agent: say so, go on
                log.error("output review: %s", exc, extra={"event": "review_error"})
            await asyncio.sleep(POLL_SECONDS)

    async def poll(self, now: float) -> None:
        """Record and announce this site's new decisions; expire and discard what is due."""
        for held in await asyncio.to_thread(self.store.all):
            mine = held.decisions.get(self.site)
            if mine is not None and not mine.recorded:
                self._record(
                    held,
                    mine.decision,
                    "accepted" if mine.decision == APPROVED else "refused",
                    f"review: {mine.decision} by the data-protection officer of site {self.site} ({mine.by})",
                )
                await asyncio.to_thread(self.store.update, held.id, _mark_recorded(self.site))
                await self._announce(held.id, mine)
            closes = held.closes_at
            if closes is not None and now >= closes:
                updated = await asyncio.to_thread(self.store.update, held.id, lambda h: h.expire(now))
                held = updated or held
            if held.state in (DENIED, EXPIRED) and not held.closed_recorded:
                self._record(held, "discarded" if held.state == DENIED else "expired", "refused", _closing(held))
                await asyncio.to_thread(self.store.update, held.id, _mark_closed)
        await asyncio.to_thread(self.store.prune, now - KEEP_SECONDS)

    async def _announce(self, held_id: str, mine: review_store.Decision, only: int | None = None) -> None:
        """Send this site's decision, with its time (so every member computes the same retention)."""
        frame = msg.control(
            msg.REVIEW_DECISION, self.index, site=self.site, query_id=held_id, decision=mine.decision, time=mine.time
        )
        for peer, conn in list(self.mesh.links.items()):
            if only is None or peer == only:
                try:
                    await conn.send_frame(frame)
                except Exception as exc:  # sent again when the link comes back
                    log.warning("review decision not sent to party %d: %s", peer, exc)

    async def link_up(self, peer: int, conn: Connection) -> None:
        """Tell a peer whose link just came up every decision of this site it may have missed."""
        for held in await asyncio.to_thread(self.store.all):
            mine = held.decisions.get(self.site)
            if mine is not None and mine.recorded and held.state in (PENDING, APPROVED, DENIED):
                await self._announce(held.id, mine, only=peer)

    async def on_decision(self, conn: Connection, body: dict[str, Any]) -> None:
        """A reviewing peer's decision, from that peer's own link only."""
        site, held_id, decision, when = body["site"], body["query_id"], body["decision"], float(body["time"])
        if conn.peer_index is None or site != conn.peer_name:
            raise AuthError(f"{conn.label} may not send a review decision for site {site!r}")
        if not is_lower_hex(held_id, 32) or not math.isfinite(when):
            raise ReviewError(f"{conn.label} sent a malformed review decision")

        def change(held: Held) -> bool:
            return held.decide(site, decision, f"site {site}", when, recorded=True)

        try:
            await asyncio.to_thread(self.store.update, held_id, change)
        except ReviewError as exc:
            log.warning("review decision of site %s not taken: %s", site, exc, extra={"event": "review_error"})

    # --- the analyst ------------------------------------------------------------------------

    async def on_list(self, conn: Connection) -> None:
        """The analyst's results held at this member, and those held before (released ones too:
        a client whose confirmation reached only some members confirms at the others)."""
        items = [
            {
                "query_id": h.id,
                "query": h.query,
                "state": h.state,
                "waiting": h.waiting,
                "denied_by": h.denied_by,
                "deadline": h.deadline,
                "keep_until": h.keep_until,
            }
            for h in await asyncio.to_thread(self.store.all)
            if h.analyst == conn.peer_name
        ]
        await conn.send_frame(msg.control(msg.REVIEW_LIST, self.index, site=self.site, items=items))

    async def on_fetch(self, conn: Connection, body: dict[str, Any]) -> None:
        """Send the analyst this member's shares of each approved result it asks for; they stay
        until the analyst confirms receipt. The first fetch writes the ``released`` audit entry;
        a repeated one (the first was cut off) sends the same shares with the same receipt."""
        for held_id in _ids(conn, body):
            async with self._fetching:
                held = await asyncio.to_thread(self.store.get, held_id)
                if held is None or held.analyst != conn.peer_name or held.state != APPROVED:
                    continue
                shares = await asyncio.to_thread(self.store.shares, held_id)
                receipt = held.receipt
                if receipt is None:
                    receipt = self._record(
                        held,
                        "released",
                        "accepted",
                        f"released after review: approved by {', '.join(held.sites)}",
                        [Reveal(r["name"], tuple(r["shape"])) for r in held.reveals],
                    ).to_json()
                    await asyncio.to_thread(self.store.update, held_id, _mark_sent(receipt))
            await conn.send_frame(
                msg.control(
                    msg.RESULT,
                    self.index,
                    site=self.site,
                    query_id=held_id,
                    receipt=receipt,
                    meta=json.dumps(held.meta, sort_keys=True),
                    stats=planning.stats_of(held.meta),
                )
            )
            await conn.send_frame(
                Frame(MsgType.RESULT_SHARES, session=msg.session_id(held_id), sender=self.index, array=shares)
            )

    async def on_confirm(self, conn: Connection, body: dict[str, Any]) -> None:
        """The analyst's client reconstructed these results: delete this member's shares (only
        of results it was sent; confirming again, or someone else's result, changes nothing)."""
        analyst = conn.peer_name
        for held_id in _ids(conn, body):

            def change(held: Held) -> bool:
                if held.analyst != analyst or held.state != APPROVED or held.receipt is None:
                    return False
                held.state = RELEASED
                held.closed_recorded = True
                return True

            await asyncio.to_thread(self.store.update, held_id, change)


def _ids(conn: Connection, body: dict[str, Any]) -> list[str]:
    """The review ids of an analyst's fetch or confirmation (validated)."""
    ids = body["query_ids"]
    if not all(isinstance(i, str) and is_lower_hex(i, 32) for i in ids) or len(ids) > 1000:
        raise ReviewError(f"{conn.label} sent malformed review ids")
    return list(ids)


def _closing(held: Held) -> str:
    """The reason of a denied or expired result's last audit entry at this member."""
    if held.state == DENIED:
        return f"review: denied at {', '.join(held.denied_by)}; the shares were deleted and nothing was released"
    if held.waiting:
        return (
            f"review: not approved by {', '.join(held.waiting)} before {_when(held.deadline)}; "
            "the shares were deleted and nothing was released"
        )
    keep_until = held.keep_until
    assert keep_until is not None
    if held.receipt is None:
        return (
            f"review: approved, but not fetched before {_when(keep_until)} (review_keep_hours); "
            "the shares were deleted and nothing was released"
        )
    return (
        f"review: approved and sent, but its receipt was not confirmed before {_when(keep_until)} "
        "(review_keep_hours); the shares were deleted"
    )


def _mark_recorded(site: str) -> Callable[[Held], bool]:
    def change(held: Held) -> bool:
        held.decisions[site].recorded = True
        return True

    return change


def _mark_closed(held: Held) -> bool:
    held.closed_recorded = True
    return True


def _mark_sent(receipt: dict[str, Any]) -> Callable[[Held], bool]:
    def change(held: Held) -> bool:
        held.receipt = receipt
        return True

    return change
