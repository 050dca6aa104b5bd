"""An input-only site: a data site outside the three-member compute committee.

It runs no MPC protocol and needs no inbound port. It dials every committee member (outbound
mutual TLS, through the member's relay when it has one), sends its policy, and then answers the
queries the members forward to it (:mod:`.inputs` is the members' side):

1. the analyst's signed envelope is verified here (signature, freshness, replay), whichever
   member forwarded it first (the other two copies join that one);
2. the text is compiled against the consortium schema under the strictest combination of this
   site's own policy (read from its own file, never from a member) and the other sites'
   policies the member forwarded; the analyst, rate and budget rules are this site's own too;
3. the plan's local SQL runs on this site's data (a failing local step yields fill values and a
   secret failure word, as at a member: the committee fails the query without naming a site);
   with the differences against the analyst's remembered query sets (the release ledger), the
   vector is split into replicated shares for the three members, two of the three components
   as 16-byte seeds (:func:`site_agent.mpc.sharing.deal_compressed`);
4. each member gets its pair with the plan digest and the digests of this site's ledger and
   budget for the analyst, which the member compares with its own; the audit entry is written
   and its receipt travels with the shares to the analyst (through the members);
5. after the session a member says whether the result was released and which cells were; the
   released query sets go into this site's release ledger (a failure gets a second audit entry).

A refusal here (analyst, rate, budget, policy, or a statement input sites cannot take part in)
goes to every member, which fails the query naming this site. Output review needs the reviewing
site in the committee, so an input-only site's policy must say ``review = "auto"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..audit import AuditLog, Reveal
from ..config import AgentConfig, ConsortiumConfig
from ..crypto.certs import client_context, fingerprint, peer_common_name, peer_fingerprint
from ..crypto.envelope import Envelope, ReplayCache, verify_envelope
from ..crypto.signing import load_private_key
from ..errors import AuthError, ConfigError, MpcError, PolicyRefusal, ProtocolViolation, QueryError, ReplayedEnvelope
from ..linkage.declaration import linkage_of
from ..membership.identity import admission
from ..membership.watch import ConsortiumWatcher, accept
from ..mpc.sharing import deal_compressed
from ..net.framing import DEFAULT_MAX_FRAME, OUTSIDER, Frame, MsgType, decode, encode_parts
from ..net.mesh import REDIAL_FIRST, REDIAL_MAX, WS_OPTIONS
from ..net.mpc_transport import websocket_message
from ..policy import Policy, RateLimiter, combine, load_policy
from ..privacy.accountant import Accountant
from ..privacy.ledger import Ledger, Membership
from ..query.membership import membership
from ..relay.tunnel import open_tunnel
from . import messages as msg
from . import planning
from .budget import Reservation, commit, give_back, privacy_record, reserve
from .data import open_tables
from .inputs import ACCEPT, ARRAY, INPUTS, REFUSE, answer_key, check_supported
from .models import ModelCompiled
from .verdicts import REFUSALS, classify

log = logging.getLogger("site_agent")

CONNECT_SECONDS = 10.0
"""At start, how long to wait for the connections to every member before saying "serving"."""
FAILED = "the committee reported that the query failed after this site shared its inputs; nothing was released"
OUTCOME_WAIT = 3
"""Query timeouts after which a query whose outcome never came is recorded as failed here."""
KEEP_QUERIES = 1024
"""Queries remembered (to join the members' later copies and hear their outcome)."""


@dataclass
class _Query:
    """One forwarded query at this site: what its outcome needs."""

    env: Envelope
    plan: planning.Compiled | None = None
    members: Membership | None = None
    policy: Policy | None = None
    done: bool = False
    steps: set[int] = field(default_factory=set)
    """The model steps answered (each member asks for each)."""


class InputSite:
    """An input-only site's daemon state (see the module docstring)."""

    def __init__(self, config: AgentConfig, consortium: ConsortiumConfig) -> None:
        self.config = config
        self.consortium = consortium
        self.site = config.site
        if self.site in consortium.committee:
            raise ConfigError(f"site {self.site!r} is a compute member, not an input-only site")
        self.committee = consortium.require_committee()
        self.policy = load_policy(config.policy, self.site, True)
        if self.policy.review != "auto":
            raise ConfigError(
                f'{config.policy}: [privacy] review = "{self.policy.review}": output review needs the reviewing '
                'site in the compute committee; an input-only site says review = "auto"'
            )
        if not config.tables:
            raise ConfigError(f"{config.path}: input-only site {self.site!r} declares no [tables]")
        self.schema = planning.load_schema(consortium)
        self.linkage_declared = linkage_of(consortium.path.parent / planning.SCHEMA_FILE, self.schema)
        self.db = open_tables(config.tables)
        self.audit = AuditLog(config.audit_log, self.site, load_private_key(config.signing_key))
        self.ledger = Ledger(config.audit_log.parent / "ledger")
        self.accountant = Accountant(config.audit_log.parent / "budget")
        self.replays = ReplayCache()
        self.limiter = RateLimiter(self.site, self.policy.max_queries_per_hour)
        self.ssl = client_context(config.tls_cert, config.tls_key, config.ca_cert)
        self._links: dict[int, ClientConnection] = {}
        self._queries: OrderedDict[str, _Query] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._all_linked = asyncio.Event()
        self._ledger_lock = asyncio.Lock()
        """Held while a released result's sets are recorded, and while a query reads the ledger:
        the outcome of one query and the next query may come in on different members' links."""
        self.watcher = ConsortiumWatcher(config.consortium, lambda: self.consortium, self._membership_changed)

    # --- life cycle ----------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Keep a connection to every committee member until ``stop`` is set."""
        log.info("starting as an input-only site", extra={"event": "start", "site": self.site})
        uplinks = [asyncio.create_task(self._keep_uplink(i)) for i in range(len(self.committee))]
        watching = asyncio.create_task(self.watcher.run())
        # "serving" once every member has this site's policy (or after a while with a member down:
        # its connection comes when the member does, and until then its queries fail naming it).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_linked.wait(), CONNECT_SECONDS)
        log.info("serving", extra={"event": "serving", "peers": sorted(self.committee[i] for i in self._links)})
        await stop.wait()
        log.info("stopping", extra={"event": "stop", "in_flight": len(self._tasks)})
        for task in (*uplinks, watching, *self._tasks):
            task.cancel()
        await asyncio.gather(*uplinks, watching, *self._tasks, return_exceptions=True)
        self.audit.close()
        self.db.close()

    async def _membership_changed(self, old: ConsortiumConfig, new: ConsortiumConfig, signers: set[str]) -> None:
        """Run under an approved new consortium version (revocations, new sites, a rotated
        certificate) without a restart: connections to a member whose certificate the new version
        refuses are closed; if this site's own certificate was rotated, every connection is made
        again with it (once the files hold the certificate the consortium registers)."""
        self.consortium = new
        accept(self.config, self.audit, self.policy.digest(), old, new, signers)
        rotated = new.site(self.site).tls_fingerprint != old.site(self.site).tls_fingerprint
        if rotated and fingerprint(self.config.tls_cert.read_bytes()) == new.site(self.site).tls_fingerprint:
            self.ssl = client_context(self.config.tls_cert, self.config.tls_key, self.config.ca_cert)
            log.info("serving with the rotated certificate", extra={"event": "certificate_rotated"})
        for index, ws in list(self._links.items()):
            fp = peer_fingerprint(ws.transport.get_extra_info("ssl_object"))
            reason = admission(new, self.committee[index], fp)
            if rotated or reason is not None:
                await ws.close(1008, (reason or "this site's certificate was rotated")[:120])

    async def _keep_uplink(self, index: int) -> None:
        """Dial member ``index`` and serve the connection; when it is lost, dial again (backoff)."""
        delay = REDIAL_FIRST
        while True:
            started = time.monotonic()
            try:
                await self._uplink(index)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever failed, the connection must keep coming back
                log.info(
                    "cannot reach %s: %s; next try in %.1f s",
                    self.committee[index],
                    str(exc) or type(exc).__name__,
                    delay,
                    extra={"event": "dial_failed", "peer": self.committee[index]},
                )
            if time.monotonic() - started >= REDIAL_MAX:
                delay = REDIAL_FIRST
            await asyncio.sleep(delay)
            delay = min(delay * 2, REDIAL_MAX)

    async def _uplink(self, index: int) -> None:
        name = self.committee[index]
        member = self.consortium.site(name)
        tunnel = await open_tunnel(member.relay, self.ssl, name) if member.relay else None
        try:
            ws = await connect(
                f"wss://{member.address.host}:{member.address.port}",
                sock=tunnel,
                ssl=self.ssl,
                max_size=DEFAULT_MAX_FRAME,
                open_timeout=10,
                **WS_OPTIONS,
            )
        except BaseException:
            if tunnel is not None:
                tunnel.close()
            raise
        try:
            ssl_object = ws.transport.get_extra_info("ssl_object")
            if peer_common_name(ssl_object) != name:
                raise AuthError(f"the server at {name}'s address is not {name}")
            reason = admission(self.consortium, name, peer_fingerprint(ssl_object))
            if reason is not None:
                raise AuthError(f"{name}: {reason}")
            await _send(ws, msg.control(msg.POLICY, OUTSIDER, site=self.site, policy=self.policy.to_json()))
            self._links[index] = ws
            if len(self._links) == len(self.committee):
                self._all_linked.set()
            log.info("connected to %s", name, extra={"event": "link_up", "peer": name})
            async for data in ws:
                await self._on_frame(index, data)
        except ConnectionClosed:
            pass
        finally:
            if self._links.get(index) is ws:
                del self._links[index]
            await ws.close()

    async def _on_frame(self, index: int, data: str | bytes) -> None:
        """One frame from member ``index``: a forwarded query, an outcome, or an error notice."""
        try:
            if isinstance(data, str):
                raise ProtocolViolation("frames are binary websocket messages")
            frame = decode(data, DEFAULT_MAX_FRAME)
            if frame.sender != index:
                raise ProtocolViolation(f"a frame claims sender {frame.sender} on the link to {self.committee[index]}")
            kind = (frame.control or {}).get("kind")
            if frame.type == MsgType.ERROR:
                log.warning("error from %s: %s", self.committee[index], (frame.control or {}).get("message", "?"))
            elif kind == msg.INPUT_REQUEST:
                self._spawn(self._on_request(frame.control or {}))
            elif kind == msg.INPUT_STEP:
                self._spawn(self._on_step(frame.control or {}))
            elif kind == msg.INPUT_OUTCOME:  # in order: before the member's next forwarded query
                await self._on_outcome(frame.control or {})
            else:
                raise ProtocolViolation(f"an input-only site does not serve {frame.type.name} {kind or ''} frames")
        except MpcError as exc:
            log.warning("bad frame from %s: %s", self.committee[index], exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one query -----------------------------------------------------------------------------

    async def _on_request(self, body: dict[str, Any]) -> None:
        """Answer a forwarded query once (the first member's copy): shares or a refusal to all."""
        env = Envelope.from_json(body["envelope"])
        query_id = env.digest()
        if query_id in self._queries:
            return  # another member's copy of a query this site answers already
        query = self._queries[query_id] = _Query(env)
        while len(self._queries) > KEEP_QUERIES:
            self._queries.popitem(last=False)
        started = time.monotonic()
        reservation: Reservation | None = None
        try:
            verify_envelope(
                env, self.consortium.analyst_key(env.analyst), self.consortium.id, time.time(), self.replays
            )
            query.policy = policy = self._combined(body["policies"])
            policy.check_analyst(env.analyst)
            self.limiter.acquire(env.analyst)
            sites = self.consortium.data_sites
            plan = planning.compile_query(
                env.query, self.schema, policy, dict(env.params), sites, self.linkage_declared
            )
            check_supported(plan, self.consortium.input_sites)
            assert isinstance(plan, planning.Compiled)
            query.plan = plan
            async with self._ledger_lock:  # after the outcome of the analyst's last query is recorded
                vector, query.members = await asyncio.to_thread(self._inputs, env.analyst, plan, sites.index(self.site))
                ledger_digest = self.ledger.digest(env.analyst)
            if plan.dp is not None:  # checked and reserved in one step, as at the members
                reservation = await reserve(self.accountant, env, plan.dp, policy, float(self.config.query_timeout))
            # From here the shares go out and the committee may open data: the budget is spent for
            # good (a query that fails later stays charged here: this site's account is the stricter).
            commit(self.accountant, reservation)
            receipt = self.audit.append(
                analyst=env.analyst,
                query=env.query,
                plan_digest=plan.digest,
                policy_digest=policy.digest(),
                decision="accepted",
                reason="inputs shared with the committee",
                reveals=[Reveal(r.name, r.shape) for r in plan.reveals],
                peers=list(self.committee),
                timings={"seconds": round(time.monotonic() - started, 4)},
                privacy=privacy_record(self.accountant, env, plan, policy),
                kind=plan.kind,
            )
            await self._share(
                query_id,
                INPUTS,
                vector,
                digest=plan.digest,
                ledger_digest=ledger_digest,
                receipt=receipt.to_json(),
            )
            log.info("inputs shared", extra={"event": "query", "analyst": env.analyst, "query_id": query_id[:16]})
            self._spawn(self._forget(query, OUTCOME_WAIT * float(self.config.query_timeout)))
        except (AuthError, PolicyRefusal, QueryError, MpcError) as exc:
            give_back(self.accountant, reservation)
            if isinstance(exc, ReplayedEnvelope):
                return  # a copy of an envelope this site saw before: answered then
            query.done = True
            await self._refuse(env, query, exc, started)

    def _combined(self, forwarded: dict[str, Any]) -> Policy:
        """This site's own policy with the other sites' as the member forwarded them (never the
        forwarded copy of its own); the sites every member combined must all be there."""
        others = {str(site): Policy.from_json(str(site), p) for site, p in forwarded.items() if site != self.site}
        expected = set(self.consortium.committee) | set(self.consortium.input_sites)
        if set(others) | {self.site} != expected:
            raise ProtocolViolation("the forwarded policies are not those of every site")
        return combine([self.policy, *others.values()])

    def _inputs(self, analyst: str, plan: planning.Compiled, site_index: int) -> tuple[np.ndarray, Membership | None]:
        """This site's flat input vector (its local pre-aggregates, then its differences with the
        analyst's remembered sets) and its persons in the query's sets."""
        local = plan.local_inputs(self.db.cursor(), self.site, site_index, True)
        remembered = len(self.ledger.names(analyst))
        try:
            members = membership(plan.plan, self.db.cursor(), site_index, True)
            differences = np.zeros(0, dtype=np.int64) if members is None else self.ledger.differences(analyst, members)
        except Exception as exc:  # the site's engine, like a failing local step: every member fails alike
            log.warning("the release ledger's query failed here (%s); every member fails", type(exc).__name__)
            members, local = None, plan.failed_vector()
            differences = np.zeros(plan.ledger_shape(remembered), dtype=np.int64)
        return np.concatenate([local, differences.reshape(-1).astype(np.uint64)]), members

    async def _share(self, query_id: str, step: int, vector: np.ndarray, **fields: Any) -> None:
        """Deal ``vector`` into replicated shares and send each member its pair: the seeds in an
        ``input`` message (with ``fields``), the array component after it, keyed alike."""
        shares = deal_compressed(vector)
        key = answer_key(query_id, step)
        for index, share in enumerate(shares):
            ws = self._links.get(index)
            if ws is None:
                continue  # that member waits in vain and fails the query naming this site
            parts = (share.first, share.second)
            seeds = [p.hex() if isinstance(p, bytes) else ARRAY for p in parts]
            body = self._input(query_id, step, ACCEPT, seeds=seeds, words=int(vector.size), **fields)
            with contextlib.suppress(ConnectionClosed):
                await _send(ws, body)
                for part in parts:
                    if not isinstance(part, bytes):
                        await _send(ws, Frame(MsgType.INPUT_SHARES, session=key, sender=OUTSIDER, array=part))

    def _input(self, query_id: str, step: int, verdict: str, **fields: Any) -> Frame:
        """An ``input`` message of this site (the fields a verdict does not need left empty)."""
        empty: dict[str, Any] = {
            "digest": "",
            "ledger_digest": "",
            "category": "",
            "rule": "",
            "message": "",
            "receipt": None,
            "seeds": [],
            "words": 0,
        }
        return msg.control(
            msg.INPUT, OUTSIDER, site=self.site, query_id=query_id, verdict=verdict, step=step, **{**empty, **fields}
        )

    async def _to_members(self, frame: Frame) -> None:
        for ws in list(self._links.values()):
            with contextlib.suppress(ConnectionClosed):
                await _send(ws, frame)

    async def _refuse(self, env: Envelope, query: _Query, exc: Exception, started: float) -> None:
        """Record a refusal here and tell every member, which fails the query naming this site."""
        category, rule, _ = classify(exc, self.site, dict(enumerate(self.committee)), self.consortium.input_sites)
        plan = query.plan
        self.audit.append(
            analyst=env.analyst,
            query=env.query,
            plan_digest=plan.digest if plan is not None else None,
            policy_digest=self.policy.digest(),
            decision="refused" if category in REFUSALS else "failed",
            reason=f"{category}: {exc}",
            peers=list(self.committee),
            timings={"seconds": round(time.monotonic() - started, 4)},
            kind=plan.kind if plan is not None else None,
            rule=rule or None,
        )
        log.info("query not answered", extra={"event": "refused", "category": category, "rule": rule})
        await self._to_members(
            self._input(env.digest(), INPUTS, REFUSE, category=category, rule=rule, message=str(exc))
        )

    async def _on_step(self, body: dict[str, Any]) -> None:
        """A model's step (the first member's request counts): this site's vector at the public
        parameters the committee opened, shared like its inputs."""
        query_id, step = body["query_id"], body["step"]
        query = self._queries.get(query_id)
        if query is None or query.done or not isinstance(query.plan, ModelCompiled) or step in query.steps:
            return
        query.steps.add(step)
        plan = query.plan
        try:
            vector = await asyncio.to_thread(plan.model.local, plan.plan, plan.site["con"], True, body["params"])
        except Exception as exc:  # malformed parameters, or the engine: the committee fails the query
            log.warning("a model step failed here (%s)", type(exc).__name__)
            message = f"input site {self.site} could not compute a model step ({type(exc).__name__})"
            await self._to_members(self._input(query_id, step, REFUSE, category="failed", message=message))
            return
        await self._share(query_id, step, vector)

    async def _forget(self, query: _Query, seconds: float) -> None:
        """A query whose outcome no member told within ``seconds`` (the members stopped or lost
        their connections to this site): recorded as failed here, its state dropped. Its sets are
        not remembered, so this site's ledger differs from the members' if they released it, and
        the analyst's next query fails naming this site instead of running on unequal ledgers."""
        await asyncio.sleep(seconds)
        if query.done:
            return
        silent = "no member said within the query's time what became of the query this site shared its inputs for"
        await self._on_outcome({"query_id": query.env.digest(), "released": False, "opened": []}, silent)

    async def _on_outcome(self, body: dict[str, Any], reason: str = FAILED) -> None:
        """A member's word on a query this site shared inputs for (the first word counts)."""
        query = self._queries.get(body["query_id"])
        if query is None or query.done or query.plan is None:
            return
        query.done = True
        env, plan, members = query.env, query.plan, query.members
        query.plan, query.members = None, None  # the persons' hashes are not kept past the outcome
        if body["released"]:
            opened = np.asarray(body["opened"], dtype=bool)
            expected = plan.ledger_shape(1)[:2] if "ledger" in plan.plan.data else (0,)
            if members is not None and opened.shape == expected:
                async with self._ledger_lock:  # taken at once: no other task runs since "done" was set
                    await asyncio.to_thread(self.ledger.record, env.analyst, env.digest(), members, opened)
            elif members is not None:
                log.warning("a member named released sets of another shape; this site's ledger does not record them")
            return
        self.audit.append(
            analyst=env.analyst,
            query=env.query,
            plan_digest=plan.digest,
            policy_digest=self.policy.digest(),
            decision="failed",
            reason=reason,
            peers=list(self.committee),
            kind=plan.kind,
        )


async def _send(ws: ClientConnection, frame: Frame) -> None:
    await ws.send(websocket_message(encode_parts(frame)))
