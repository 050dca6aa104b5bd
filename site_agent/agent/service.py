"""The site agent: one committee member serving queries next to its data.

What happens to a query (see docs/architecture.md for the whole path):

1. ``QUERY`` from an analyst's TLS connection: the envelope's signature, freshness and
   nonce are checked, the analyst's certificate name must equal the envelope's analyst,
   the per-analyst rate limit applies, and the text is compiled against the consortium
   schema and the combined (strictest) policy of all three members.
2. The MPC session (id derived from the envelope, so members agree without talking)
   starts with the agreement round: verdicts and plan digests. A refusal anywhere stops
   every member before any share moves.
3. The plan's local SQL runs on this site's DuckDB (a per-site breakdown places the results
   in this site's own SITE cells, by its position among the members holding data); the
   pre-aggregates are shared with ``input_all``; the plan's MPC program runs; this member
   sends the analyst its pair of shares of the declared outputs plus the public result
   metadata and its receipt.
4. Every request, accepted or not, gets one signed audit entry. Log lines carry names,
   digests and timings, never data values.

A failure anywhere releases nothing: outputs are only sent after the program completed.

A member without data (``data = false`` in the consortium file, a neutral third member when
two hospitals take part) declares no tables and serves the schema's tables empty: its local
step yields fill values only, it has no SITE slice, and its policy has no table rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..audit import AuditLog, Receipt, Reveal
from ..audit.entry import EXPLAINED, Decision
from ..config import AgentConfig, ConsortiumConfig, load_agent
from ..crypto.certs import client_context, fingerprint, server_context
from ..crypto.envelope import Envelope, ReplayCache, verify_envelope
from ..crypto.signing import load_private_key
from ..errors import (
    AuthError,
    ConfigError,
    LocalStepError,
    ModelRefused,
    MpcError,
    PeerFailure,
    PlanMismatch,
    PolicyRefusal,
    QueryError,
    QueryRefused,
    ReplayedEnvelope,
    StaleEnvelope,
)
from ..linkage.declaration import key_path, keys_db, linkage_of, load_key_share
from ..linkage.statement import LinkageCompiled
from ..membership.identity import admission
from ..membership.watch import ConsortiumWatcher, accept, startup_version
from ..models.statement import raise_outcome
from ..mpc.arithmetic import input_all
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare
from ..net.framing import Frame, MsgType, error_frame
from ..net.mesh import Connection, Member, Mesh
from ..policy import Policy, RateLimiter, combine, load_policy
from ..privacy.accountant import Accountant
from ..privacy.ledger import Ledger, Membership
from ..query.membership import membership
from ..review.store import ReviewStore
from . import messages as msg
from . import planning
from .agreement import ACCEPT, REFUSE, agree
from .budget import Reservation, commit, give_back, privacy_record, reserve
from .data import columns_of, empty_tables, open_tables
from .input_site import InputSite
from .inputs import InputDesk, InputSiteFailed, InputSiteRefused, check_supported
from .linkage import LinkageEvaluator, linkage_local
from .models import ModelCompiled
from .reviews import ReviewDesk
from .verdicts import REFUSALS, classify

log = logging.getLogger("site_agent")

POLICY_WAIT_SECONDS = 10.0
CLOSE_SECONDS = 3.0
"""At most this long for closing the links on stop (SIGTERM); then the process exits anyway."""


@dataclass
class Outcome:
    """What one member got out of a session: its shares of the outputs and the public metadata."""

    shares: AShare
    meta: dict[str, Any]
    members: Membership | None = None  # this site's persons in the query's sets (the ledger's)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # the input-only sites' receipts


class Agent:
    """A committee member's daemon state: config, policy, data, audit log and mesh."""

    def __init__(self, config: AgentConfig, consortium: ConsortiumConfig) -> None:
        self.config = config
        self.consortium = consortium
        self.site = config.site
        committee = consortium.require_committee()
        if self.site not in committee:
            raise MpcError(f"site {self.site!r} is not a compute member: it serves as an input-only site")
        self.index = committee.index(self.site)
        self.names = dict(enumerate(committee))
        self.holds_data = consortium.site(self.site).data
        if not self.holds_data and config.tables:
            raise ConfigError(
                f"{config.path}: site {self.site!r} holds no data (data = false in {consortium.path}) "
                f"but declares tables ({', '.join(config.tables)}): remove its [tables] sections"
            )
        # The members holding data, in committee order: the domain of SITE in per-site breakdowns.
        self.sites = consortium.data_sites
        self.site_index = self.sites.index(self.site) if self.holds_data else None
        self.policy = load_policy(config.policy, self.site, self.holds_data)
        self.peer_policies: dict[str, Policy] = {}
        """The latest policy each peer sent (kept while its link is down, for status)."""
        self._policies_known = asyncio.Event()
        self._policy_fresh = {name: asyncio.Event() for name in self.names.values() if name != self.site}
        """Set when the peer's policy arrived on its current link; cleared when the link is lost."""
        self.schema = planning.load_schema(consortium)
        self.linkage_declared = linkage_of(consortium.path.parent / planning.SCHEMA_FILE, self.schema)
        # A member without data serves the schema's tables empty: the local SQL runs unchanged.
        self.db = open_tables(config.tables) if self.holds_data else empty_tables(self.schema)
        self.audit = AuditLog(config.audit_log, self.site, load_private_key(config.signing_key))
        self.ledger = Ledger(config.audit_log.parent / "ledger")
        self.accountant = Accountant(config.audit_log.parent / "budget")
        self.replays = ReplayCache()
        self.limiter = RateLimiter(self.site, self.policy.max_queries_per_hour)
        members = [
            Member(i, name, site.address.host, site.address.port, site.relay)
            for i, name in self.names.items()
            for site in [consortium.site(name)]
        ]
        self.mesh = Mesh(
            self.index,
            members,
            server_context(config.tls_cert, config.tls_key, config.ca_cert, require_client_cert=False),
            client_context(config.tls_cert, config.tls_key, config.ca_cert),
            # Reached through a relay only: serve its tunnels on a loopback port of our own.
            listen_host=config.listen.host if config.listen else "127.0.0.1",
            listen_port=None if config.listen else 0,
            admit=lambda name, fp: admission(self.consortium, name, fp),
            relay=config.relay,
        )
        self.mesh.on(MsgType.QUERY, self._on_query)
        self.mesh.on(MsgType.STATUS, self._on_status)
        self.mesh.on(MsgType.CONTROL, self._on_control)
        self.linkage = LinkageEvaluator(
            self.index,
            functools.cache(lambda: load_key_share(key_path(config))),
            lambda: self.consortium.data_sites,
            self.audit,  # one entry per linkage batch answered or refused
            lambda: self.policy.digest(),
        )
        self.mesh.on(MsgType.LINKAGE, self.linkage.handle)
        self.inputs = InputDesk(self.site, self.index, lambda: self.consortium)
        self.mesh.on(MsgType.INPUT_SHARES, self._on_input_shares)
        self.mesh.on_link_up(self._send_policy)
        self.reviews = ReviewDesk(
            self.site,
            self.index,
            ReviewStore(config.audit_log.parent / "review"),
            self.audit,
            self.mesh,
            lambda: self.policy.digest(),
            self._peer_names,
        )
        self.mesh.on_link_up(self.reviews.link_up)
        self.mesh.on_link_down(self._link_lost)
        self.mesh.on_refused(self._audit_refused)
        self._running: set[asyncio.Task[Any]] = set()
        self.watcher = ConsortiumWatcher(config.consortium, lambda: self.consortium, self._membership_changed)

    # --- life cycle ----------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Start the mesh, exchange policies, serve until ``stop`` is set, then shut down."""
        log.info("starting", extra={"event": "start", "site": self.site, "index": self.index})
        # A peer that is down now does not keep this member from serving: the links come up
        # when it does (re-dialed by whichever member dials), and policies follow every link-up.
        await self.mesh.start(require_links=False)
        watching = asyncio.create_task(self.watcher.run())
        reviewing = asyncio.create_task(self.reviews.run())
        log.info("serving", extra={"event": "serving", "address": str(self.config.listen or self.config.relay)})
        await stop.wait()
        watching.cancel()
        reviewing.cancel()
        log.info("stopping", extra={"event": "stop", "in_flight": len(self._running)})
        await self._abort_running()
        # Closing waits for each peer's close handshake; a frozen peer must not hold up the stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.mesh.close(), CLOSE_SECONDS)
        # A query that arrived while the first ones were being aborted is aborted too, before
        # the audit log closes, so it still gets its "failed" entry.
        await self._abort_running()
        self.audit.close()
        self.db.close()

    async def _membership_changed(self, old: ConsortiumConfig, new: ConsortiumConfig, signers: set[str]) -> None:
        """Run under an approved new consortium version from now on, without a restart: record
        it, take up this site's own new certificate if it was rotated, and close every
        connection the new version refuses (revoked or replaced certificates)."""
        self.consortium = new
        self.sites = new.data_sites
        accept(self.config, self.audit, self.policy.digest(), old, new, signers)
        if new.committee != old.committee:
            log.warning(
                "the committee changed to %s: it takes effect when this agent restarts",
                ", ".join(new.committee),
                extra={"event": "membership_changed"},
            )
        mine = new.sites.get(self.site)
        if mine is not None and mine.tls_fingerprint != old.site(self.site).tls_fingerprint:
            self._take_up_certificate(mine.tls_fingerprint)
        await self.mesh.recheck()

    def _take_up_certificate(self, registered: str) -> None:
        """Load this site's rotated TLS key and certificate into the live contexts (new
        connections present it) once the files hold the certificate the consortium registers."""
        if fingerprint(self.config.tls_cert.read_bytes()) != registered:
            log.error(
                "the consortium registers a new certificate for this site but %s is not it",
                self.config.tls_cert,
                extra={"event": "certificate_mismatch"},
            )
            return
        for ctx in (self.mesh.server_ssl, self.mesh.client_ssl):
            ctx.load_cert_chain(str(self.config.tls_cert), str(self.config.tls_key))
        log.info("serving with the rotated certificate", extra={"event": "certificate_rotated"})

    async def _abort_running(self) -> None:
        """Cancel every query in flight and wait until each wrote its audit entry."""
        while self._running:
            tasks = list(self._running)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._running.difference_update(tasks)

    async def _send_policy(self, peer: int, conn: Connection) -> None:
        """Send this member's policy to a peer whose link just came up (first time or again)."""
        await conn.send_frame(msg.control(msg.POLICY, self.index, site=self.site, policy=self.policy.to_json()))

    def _link_lost(self, peer: int) -> None:
        # The peer may come back as a new process with a new policy: wait for the one it sends then.
        self._policy_fresh[self.names[peer]].clear()

    def _peer_names(self) -> list[str]:
        return [n for n in self.names.values() if n != self.site]

    async def _combined_policy(self) -> Policy:
        """The strictest combination of all three members' policies, each peer's as sent on its
        current link. A peer without a link fails at once naming it; a peer whose link just came
        up is waited for (up to ``POLICY_WAIT_SECONDS``) until its policy arrives."""
        for peer in self.mesh.missing():
            name = self.names[peer]
            raise PeerFailure(
                name, f"site {name} is not connected to site {self.site} (down or restarting; its link is re-dialed)"
            )
        try:
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in self._policy_fresh.values())), POLICY_WAIT_SECONDS
            )
        except TimeoutError:
            missing = [n for n, e in self._policy_fresh.items() if not e.is_set()]
            raise PeerFailure(missing[0], f"no policy received from site {missing[0]}") from None
        inputs = self.inputs.connected()  # an input-only site without a connection fails the query, named
        return combine([self.policy, *(self.peer_policies[n] for n in self._peer_names()), *inputs])

    def _latest_policy(self) -> Policy:
        """The combination of the latest policies known (the peers' must all have arrived once;
        the input-only sites' that sent theirs)."""
        inputs = [self.inputs.policies[n] for n in self.consortium.input_sites if n in self.inputs.policies]
        return combine([self.policy, *(self.peer_policies[n] for n in self._peer_names()), *inputs])

    # --- handlers ------------------------------------------------------------------------

    async def _on_input_shares(self, conn: Connection, frame: Frame) -> None:
        self.inputs.on_shares(conn, frame)

    async def _on_control(self, conn: Connection, frame: Frame) -> None:
        body = frame.control or {}
        kind = body.get("kind")
        from_input_site = conn.peer_index is None and conn.peer_name in self.consortium.input_sites
        if from_input_site and kind in (msg.POLICY, msg.INPUT):
            (self.inputs.on_policy if kind == msg.POLICY else self.inputs.on_input)(conn, body)
            return
        if kind == msg.REVIEW_DECISION:
            await self.reviews.on_decision(conn, body)
            return
        if kind in (msg.REVIEW_LIST_REQUEST, msg.REVIEW_FETCH, msg.REVIEW_CONFIRM) and conn.peer_index is None:
            if conn.peer_name not in self.consortium.analysts:
                raise AuthError(f"{conn.label} is not an analyst of the consortium")
            if kind == msg.REVIEW_LIST_REQUEST:
                await self.reviews.on_list(conn)
            else:
                await (self.reviews.on_fetch if kind == msg.REVIEW_FETCH else self.reviews.on_confirm)(conn, body)
            return
        if kind != msg.POLICY or conn.peer_index is None:
            raise MpcError(f"{conn.label} may not send {body.get('kind')!r} control messages")
        if body["site"] != conn.peer_name:
            raise AuthError(f"{conn.label} sent a policy for site {body['site']!r}")
        policy = Policy.from_json(conn.peer_name, body["policy"])
        holds_data = self.consortium.site(conn.peer_name).data
        if policy.holds_data != holds_data:
            # Only the consortium file says who holds data: table rules follow it, not the peer.
            raise ConfigError(
                f"site {conn.peer_name!r} sent a policy {'with' if policy.holds_data else 'without'} table rules, "
                f"but the consortium file says it holds {'' if holds_data else 'no '}data"
            )
        previous = self.peer_policies.get(conn.peer_name)
        self.peer_policies[conn.peer_name] = policy
        if self.mesh.links.get(conn.peer_index) is conn:
            self._policy_fresh[conn.peer_name].set()
        if len(self.peer_policies) == 2:
            self._policies_known.set()
        log.info(
            "policy of site %s %s (digest %s)",
            conn.peer_name,
            "received" if previous is None else "unchanged" if previous.digest() == policy.digest() else "changed",
            policy.digest()[:16],
            extra={"event": "policy", "peer": conn.peer_name},
        )

    async def _on_status(self, conn: Connection, frame: Frame) -> None:
        if frame.kind != msg.STATUS_REQUEST:
            raise MpcError("STATUS frames must be status requests")
        # Columns the policy exposes, never row counts: a site's table size is a site subtotal.
        tables = await asyncio.to_thread(columns_of, self.db.cursor())
        policy = self._latest_policy() if self._policies_known.is_set() else self.policy
        exposed = {t: {"columns": policy.exposed_columns(t, cols)} for t, cols in tables.items()}
        await conn.send_frame(
            msg.control(
                msg.STATUS,
                self.index,
                MsgType.STATUS,
                site=self.site,
                version=__version__,
                tables={t: v for t, v in exposed.items() if policy.tables is not None and t in policy.tables},
                policy_digest=self.policy.digest(),
                peers={
                    **{self.names[p]: p in self.mesh.links for p in self.mesh.peers},
                    **{n: n in self.inputs.policies for n in self.consortium.input_sites},
                },
                committee=list(self.names.values()),
                budget=self._budget_of(conn.peer_name),
            )
        )

    def _budget_of(self, analyst: str) -> dict[str, Any]:
        """An analyst's DP budget under this site's own policy: spent, remaining, the rule."""
        if analyst in self.names.values():  # a committee member asking: it has no budget
            return {}
        return self.accountant.spent(analyst, self.policy.privacy, time.time()).to_json()

    async def _on_query(self, conn: Connection, frame: Frame) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self._handle_query(conn, frame)
        finally:
            if task is not None:
                self._running.discard(task)

    async def _handle_query(self, conn: Connection, frame: Frame) -> None:
        body = frame.control or {}
        if body.get("kind") != msg.QUERY or body.get("mode") not in msg.MODES:
            raise MpcError("QUERY frames carry a query message with mode 'run' or 'explain'")
        started = time.monotonic()
        env = Envelope.from_json(body["envelope"])
        query_id = env.digest()
        progress = _Progress(conn, self.site, self.index, query_id, started)
        plan: planning.AnyCompiled | None = None
        reservation: Reservation | None = None
        try:
            if conn.peer_index is not None or conn.peer_name != env.analyst:
                raise AuthError(f"the envelope is signed for {env.analyst!r} but the connection is {conn.label!r}")
            verify_envelope(
                env, self.consortium.analyst_key(env.analyst), self.consortium.id, time.time(), self.replays
            )
            policy = await self._combined_policy()
            policy.check_analyst(env.analyst)
            if body["mode"] == "run":
                self.limiter.acquire(env.analyst)
            await progress("verified")
            plan = planning.compile_query(
                env.query, self.schema, policy, dict(env.params), self.sites, self.linkage_declared
            )
            check_supported(plan, self.consortium.input_sites)
            if body["mode"] == "run" and plan.dp is not None:  # checked and reserved in one step
                reservation = await reserve(self.accountant, env, plan.dp, policy, float(self.config.query_timeout))
            await progress("compiled")
            if body["mode"] == "explain":
                receipt = self._record(env, plan, "accepted", EXPLAINED, started)
                await self._reply_explain(conn, query_id, plan, receipt)
                return
            if isinstance(plan, LinkageCompiled):
                outcome = await self._run_linkage(env, plan, progress)
            else:
                outcome = await self._run_session(env, plan, policy, progress, reservation)
        except asyncio.CancelledError:
            give_back(self.accountant, reservation)
            receipt = self._record(env, plan, "failed", "agent stopped before the query completed", started)
            reason = f"site {self.site} stopped; nothing was released"
            with contextlib.suppress(Exception):
                await self._reply_failure(conn, query_id, "failed", "", reason, receipt.to_json())
            if plan is not None:
                await self._tell_peers_aborted(msg.session_id(query_id), reason)
            raise
        except (AuthError, PolicyRefusal, QueryError, QueryRefused, PlanMismatch, PeerFailure, MpcError) as exc:
            give_back(self.accountant, reservation)
            await self._refuse(conn, env, plan, exc, started)
            return
        except BaseException:
            give_back(self.accountant, reservation)
            raise
        if isinstance(plan, planning.Compiled):
            # The query sets the result opened (a result held for review counts as opened: a later
            # query cannot difference against it), remembered by every data site for the next checks.
            opened = plan.opened(outcome.meta) if "ledger" in plan.plan.data else None
            if outcome.members is not None and opened is not None:
                await asyncio.to_thread(self.ledger.record, env.analyst, query_id, outcome.members, opened)
            await self.inputs.tell(query_id, True, opened)  # before this member answers, so before its next query
        shares = np.ascontiguousarray(outcome.shares.v.reshape(2, -1))
        reviewers = plan.held_by(outcome.meta) if isinstance(plan, planning.Compiled) else []
        if isinstance(plan, planning.Compiled) and reviewers:  # held until the DPOs approve
            held, receipt = await self.reviews.hold(
                env, plan, reviewers, shares, outcome.meta, time.monotonic() - started
            )
            await conn.send_frame(
                msg.control(
                    msg.PENDING,
                    self.index,
                    site=self.site,
                    query_id=query_id,
                    sites=held.sites,
                    deadline=held.deadline,
                    receipt=receipt.to_json(),
                )
            )
            log.info(
                "query held for review", extra={"event": "held", "analyst": env.analyst, "query_id": query_id[:16]}
            )
            return
        await progress("revealed")
        reveals = [Reveal(r.name, r.shape) for r in plan.reveals]
        privacy = privacy_record(self.accountant, env, plan, policy)
        receipt = self.audit.append(
            analyst=env.analyst,
            query=env.query,
            plan_digest=plan.digest,
            policy_digest=policy.digest(),
            decision="accepted",
            reveals=reveals,
            peers=[n for n in self.names.values() if n != self.site],
            timings={"seconds": round(time.monotonic() - started, 4)},
            privacy=privacy,
            kind=plan.kind,
        )
        stats = {"seconds": time.monotonic() - started, **planning.stats_of(outcome.meta)}
        if privacy is not None:
            stats["budget"] = {k: privacy[k] for k in ("epsilon", "spent", "budget")}
        if outcome.inputs:
            stats["input_receipts"] = outcome.inputs
        await self._reply_result(conn, query_id, outcome.meta, receipt.to_json(), stats)
        await conn.send_frame(
            Frame(
                MsgType.RESULT_SHARES,
                session=msg.session_id(query_id),
                sender=self.index,
                array=shares,
            )
        )
        log.info(
            "query answered",
            extra={"event": "query", "analyst": env.analyst, "query_id": query_id[:16], "plan": plan.digest[:16]},
        )

    async def _tell_peers_aborted(self, session: bytes, reason: str) -> None:
        """Best effort: an abort notice for ``session`` to both peers, so they stop now and name
        this site, instead of waiting for the links to close or for their timeout."""
        frame = error_frame(f"party {self.index} ({self.site}) aborted: {reason}", session, self.index)
        for conn in list(self.mesh.links.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.send_frame(frame), 1.0)

    async def _run_session(
        self,
        env: Envelope,
        plan: planning.Compiled,
        policy: Policy,
        progress: _Progress,
        reservation: Reservation | None = None,
    ) -> Outcome:
        """Agreement, local step, input sharing and the plan's program, as one MPC session; the
        input-only sites' shares (``policy`` combined theirs) join the members' own inputs."""
        await self.inputs.forward(env, policy.parts)  # the input sites' local steps run beside ours
        if isinstance(plan, ModelCompiled) and self.consortium.input_sites:
            plan.site["remote"] = self._remote_steps(env, asyncio.get_running_loop())
        # Never fails on data: a failing local step yields fill values and a secret failure word,
        # and the committee fails the query alike at every member (LocalStepError, naming no site).
        local = await asyncio.to_thread(
            plan.local_inputs, self.db.cursor(), self.site, self.site_index, self.holds_data
        )
        await progress("local")
        remembered = len(self.ledger.names(env.analyst))
        members: Membership | None = None
        try:
            members, differences = await asyncio.to_thread(self._remembered, env.analyst, plan)
        except Exception as exc:  # the site's engine, like a failing local step: every member fails alike
            log.warning("the release ledger's query failed here (%s); every member fails", type(exc).__name__)
            local = plan.failed_vector()
            differences = np.zeros(plan.ledger_shape(remembered), dtype=np.int64)
        local = np.concatenate([local, differences.reshape(-1).astype(np.uint64)])
        size = plan.input_size + differences.size
        sizes = (size, size, size)
        ledger_digest = self.ledger.digest(env.analyst)
        extra, receipts = await self.inputs.collect(
            env, plan.digest, size, ledger_digest, float(self.config.query_timeout)
        )

        def program(p: Party) -> Protocol[Outcome]:
            yield from agree(p, plan.digest, ACCEPT, self.names, ledger_digest)
            commit(self.accountant, reservation)  # once every member agreed, before any input is shared
            progress.soon("agreed")
            inputs = (yield from input_all(p, local, sizes)) + extra
            progress.soon("shared")
            shares, meta = yield from plan.program(p, inputs, remembered)  # a held one with its bands
            progress.soon("computed")
            return Outcome(shares, meta, members, receipts)

        outcome = await self.mesh.run(msg.session_id(env.digest()), program, float(self.config.query_timeout))
        if outcome.meta.get("local_failed"):
            raise LocalStepError()  # after the session, at every member alike: no abort notice to race
        raise_outcome(outcome.meta)  # a model's disclosure rule refused, alike at every member
        return outcome

    async def _run_linkage(self, env: Envelope, plan: LinkageCompiled, progress: _Progress) -> Outcome:
        """Agreement (with the release ledger's digest), this site's input (its linkage keys of the
        persons the WHERE selects; a linked cohort's records) and its query sets' differences with
        the analyst's remembered sets, and the linkage program, as one MPC session; then the
        statement's query sets are remembered."""
        mine, members, differences = await asyncio.to_thread(
            linkage_local, plan, self.db.cursor(), keys_db(self.config), self.holds_data, self.ledger, env.analyst
        )
        ledger_digest = self.ledger.digest(env.analyst)
        await progress("local")

        def program(p: Party) -> Protocol[Outcome]:
            yield from agree(p, plan.digest, ACCEPT, self.names, ledger_digest)
            progress.soon("agreed")
            shares, meta = yield from plan.program(p, mine, differences)
            progress.soon("computed")
            return Outcome(shares, meta, members)

        outcome = await self.mesh.run(msg.session_id(env.digest()), program, float(self.config.query_timeout))
        if members is not None:  # before this member answers, so before the analyst's next query
            await asyncio.to_thread(self.ledger.record, env.analyst, env.digest(), members, plan.opened(outcome.meta))
        return outcome

    def _remote_steps(
        self, env: Envelope, loop: asyncio.AbstractEventLoop
    ) -> Callable[[dict[str, Any] | None, int], np.ndarray]:
        """A model's local steps reach the input-only sites: called in the step's worker thread,
        it asks them (on the event loop) for their vectors at the step's public parameters and
        waits for this member's shares; the steps are numbered alike at every member."""
        count = itertools.count()
        timeout = float(self.config.query_timeout)

        def fetch(params: dict[str, Any] | None, words: int) -> np.ndarray:
            ask = self.inputs.step(env.digest(), next(count), params, words, timeout)
            return asyncio.run_coroutine_threadsafe(ask, loop).result(timeout + 1)

        return fetch

    def _remembered(self, analyst: str, plan: planning.Compiled) -> tuple[Membership | None, np.ndarray]:
        """This site's persons in the query's sets, and their differences with the analyst's
        remembered sets (empty when the plan has no ledger query or nothing is remembered)."""
        members = membership(plan.plan, self.db.cursor(), self.site_index, self.holds_data)
        if members is None:
            return None, np.zeros(0, dtype=np.int64)
        return members, self.ledger.differences(analyst, members)

    async def _refuse(
        self, conn: Connection, env: Envelope, plan: planning.AnyCompiled | None, exc: Exception, started: float
    ) -> None:
        """Record and report a refusal or failure; tell the peers so they do not wait.

        The analyst hears first (so a peer's "site X refused" echo never beats this site's
        own reason); then, if this member refused before its session started, it joins the
        agreement round with a refusal so the peers, who may have accepted, stop at once
        instead of at their timeout. Envelopes whose signature did not verify skip that
        round: nobody authenticated asked, and the peers check the same envelope themselves,
        so unsigned junk sent to one member cannot make its peers buffer sessions.
        """
        category, rule, site = classify(exc, self.site, self.names, self.consortium.input_sites)
        decision: Decision = "refused" if category in REFUSALS else "failed"
        receipt = self._record(env, plan, decision, f"{category}: {exc}", started, rule or None)
        if plan is not None:  # an input-only site that shared its inputs hears that nothing was released
            await self.inputs.tell(env.digest(), False, None)
        with contextlib.suppress(Exception):
            await self._reply_failure(conn, env.digest(), category, rule, str(exc), receipt.to_json(), site)
        log.info("query not answered", extra={"event": decision, "category": category, "rule": rule})
        signed = not isinstance(exc, AuthError) or isinstance(exc, (StaleEnvelope, ReplayedEnvelope))
        before_session = (PolicyRefusal, QueryError, AuthError, InputSiteFailed, InputSiteRefused)
        if signed and isinstance(exc, before_session) and not isinstance(exc, ModelRefused):
            with contextlib.suppress(Exception):
                await self.mesh.run(
                    msg.session_id(env.digest()),
                    lambda p: agree(p, "", REFUSE, self.names),
                    float(self.config.query_timeout),
                )

    def _audit_refused(self, who: str, why: str) -> None:
        """One audit entry for a frame or connection refused before any request existed."""
        self.audit.append(
            analyst=who,
            query="",
            plan_digest=None,
            policy_digest=self.policy.digest(),
            decision="refused",
            reason=f"refused before any request: {why}",
        )

    def _record(
        self,
        env: Envelope,
        plan: planning.AnyCompiled | None,
        decision: Decision,
        reason: str,
        started: float,
        rule: str | None = None,
    ) -> Receipt:
        """The request's audit entry (with the plan's statement kind once compiled, the policy rule
        that refused it, if one did, and a DP run's budget record)."""
        privacy = None
        if plan is not None and plan.dp is not None and reason != EXPLAINED:  # a DP run refused or failed
            policy = self._latest_policy() if self._policies_known.is_set() else self.policy
            privacy = privacy_record(self.accountant, env, plan, policy)
        return self.audit.append(
            analyst=env.analyst,
            query=env.query,
            plan_digest=plan.digest if plan is not None else None,
            policy_digest=self.policy.digest(),
            decision=decision,
            reason=reason,
            peers=[n for n in self.names.values() if n != self.site],
            timings={"seconds": round(time.monotonic() - started, 4)},
            privacy=privacy,
            kind=plan.kind if plan is not None else None,
            rule=rule,
        )

    async def _reply_failure(
        self,
        conn: Connection,
        query_id: str,
        category: str,
        rule: str,
        message: str,
        receipt: dict[str, Any] | None,
        site: str | None = None,
    ) -> None:
        await conn.send_frame(
            msg.control(
                msg.FAILURE,
                self.index,
                site=site or self.site,
                query_id=query_id,
                category=category,
                rule=rule,
                message=message,
                receipt=receipt,
            )
        )

    async def _reply_explain(
        self, conn: Connection, query_id: str, plan: planning.AnyCompiled, receipt: Receipt
    ) -> None:
        await self._reply_result(conn, query_id, {"explain": plan.explain()}, receipt.to_json(), {})

    async def _reply_result(
        self, conn: Connection, query_id: str, meta: dict[str, Any], receipt: dict[str, Any], stats: dict[str, Any]
    ) -> None:
        """The ``result`` message: public metadata (or an explanation), receipt and statistics."""
        await conn.send_frame(
            msg.control(
                msg.RESULT,
                self.index,
                site=self.site,
                query_id=query_id,
                receipt=receipt,
                meta=json.dumps(meta, sort_keys=True),
                stats=stats,
            )
        )


class _Progress:
    """Sends the analyst a progress message per phase (best effort: never fails a query)."""

    def __init__(self, conn: Connection, site: str, index: int, query_id: str, started: float) -> None:
        self.conn, self.site, self.index, self.query_id, self.started = conn, site, index, query_id, started
        self._sending: set[asyncio.Task[None]] = set()

    def soon(self, phase: str) -> None:
        """Report ``phase`` from synchronous code on the event loop (the MPC program between rounds)."""
        task = asyncio.get_running_loop().create_task(self(phase))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def __call__(self, phase: str) -> None:
        with contextlib.suppress(Exception):
            await self.conn.send_frame(
                msg.control(
                    msg.PROGRESS,
                    self.index,
                    site=self.site,
                    query_id=self.query_id,
                    phase=phase,
                    seconds=time.monotonic() - self.started,
                )
            )


# --- entry points ---------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line on stdout: time, level, message and structured fields."""

    FIELDS = (
        "event",
        "site",
        "index",
        "address",
        "analyst",
        "query_id",
        "plan",
        "category",
        "rule",
        "in_flight",
        "peer",
        "peers",
        "attempt",
        "seconds",
        "points",
    )

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        return json.dumps(out, sort_keys=True)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)


async def serve_forever(config_path: str, stop: asyncio.Event) -> None:
    """Load the configuration and serve until ``stop`` is set."""
    config = load_agent(config_path)
    consortium = startup_version(config)
    if config.site in consortium.committee:
        await Agent(config, consortium).serve(stop)
    else:  # a data site outside the committee: it shares inputs and runs no protocol
        await InputSite(config, consortium).serve(stop)
