"""A committee member's side of the input-only sites: their policies, requests, shares and outcomes.

An input-only site (:mod:`.input_site`) holds data but is not one of the three compute members.
It dials every member (outbound only, mutual TLS like an analyst) and sends its policy, which
counts in the strictest-wins combination like a member's. For each query the member

1. forwards the analyst's signed envelope to every input site, with the policy of every site it
   combined (the input site puts its own in place of the forwarded copy: it never relies on a
   member for its own rules), as soon as it compiled the query (:meth:`InputDesk.forward`);
2. after its own local step, waits for each input site's answer (:meth:`InputDesk.collect`):
   its verdict, the digests of its plan and of the analyst's release ledger there (both must
   equal this member's, as the members' own must in the agreement round; each site decides on
   its own privacy budget account, site_agent/agent/budget.py), and this member's pair of its
   replicated shares: x_0 and x_1 travel as 16-byte seeds, x_2 as an array
   (:func:`site_agent.mpc.sharing.deal_compressed`), so each member receives at most one array;
3. appends those shares to the members' own on the site axis of the plan's inputs, in the order
   of :attr:`ConsortiumConfig.data_sites`;
4. after the session, tells every input site what was released (:meth:`InputDesk.tell`), so it
   records the released query sets in its own release ledger.

An input site that is not connected, is silent, refuses, or compiled another plan fails the
query at every member, naming that site; nothing is shared further and nothing is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.protocol import State

from ..config import ConsortiumConfig
from ..crypto.envelope import Envelope
from ..errors import ConfigError, PeerFailure, ProtocolViolation, QueryRefused, UnsupportedQuery
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..mpc.sharing import SEED_BYTES, CompressedShare
from ..net.framing import Frame
from ..net.mesh import Connection
from ..policy import Policy
from . import messages as msg
from . import planning

log = logging.getLogger("site_agent")

MAX_WAITING = 256
"""Answers kept for queries this member has not started collecting yet (oldest dropped first)."""
INPUTS = -1
"""The step of a query's first inputs (a model's later steps count from 0)."""
ARRAY = ""
"""In an ``input`` message's ``seeds``: this share component is the INPUT_SHARES frame's array."""
REFUSE = "refuse"
ACCEPT = "accept"


class InputSiteFailed(PeerFailure):
    """An input-only site is not connected, sent nothing in time, or compiled another plan
    (``peer`` names it); every member fails the query before its session starts."""


class InputSiteRefused(QueryRefused):
    """An input-only site refused the query (its category and rule, as its analyst would hear them)."""

    def __init__(self, site: str, category: str, rule: str, message: str) -> None:
        super().__init__(site, message)
        self.category = category
        self.rule = rule


@dataclass
class _Answer:
    """What one input site sent for one query: its ``input`` message and its share array."""

    body: dict[str, Any] | None = None
    array: np.ndarray | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        if self.body is not None and (self.array is not None or ARRAY not in self.body["seeds"]):
            self.ready.set()


class InputDesk:
    """The input-only sites as one member sees them (see the module docstring)."""

    def __init__(self, site: str, index: int, consortium: Callable[[], ConsortiumConfig]) -> None:
        self.site = site
        self.index = index
        self._consortium = consortium
        self.policies: dict[str, Policy] = {}
        """The latest policy each input site sent on its current connection."""
        self._links: dict[str, Connection] = {}
        self._answers: OrderedDict[tuple[bytes, str], _Answer] = OrderedDict()

    @property
    def sites(self) -> tuple[str, ...]:
        return self._consortium().input_sites

    # --- connections and policies -------------------------------------------------------------

    def on_policy(self, conn: Connection, body: dict[str, Any]) -> None:
        """An input site's policy, sent when its connection to this member comes up."""
        name = self._sender(conn)
        if body["site"] != name:
            raise ProtocolViolation(f"{conn.label} sent a policy for site {body['site']!r}")
        policy = Policy.from_json(name, body["policy"])
        if not policy.holds_data:
            raise ConfigError(f"input-only site {name!r} sent a policy without table rules")
        self.policies[name] = policy
        self._links[name] = conn
        log.info(
            "policy of input site %s received (digest %s)",
            name,
            policy.digest()[:16],
            extra={"event": "policy", "peer": name},
        )

    def connected(self) -> list[Policy]:
        """Every input site's policy; a site without an open connection fails the query, named."""
        out = []
        for name in self.sites:
            conn = self._links.get(name)
            if conn is None or conn.ws.state is not State.OPEN or name not in self.policies:
                raise InputSiteFailed(
                    name, f"input site {name} is not connected to site {self.site} (down, or not started yet)"
                )
            out.append(self.policies[name])
        return out

    def _sender(self, conn: Connection) -> str:
        if conn.peer_index is not None or conn.peer_name not in self.sites:
            raise ProtocolViolation(f"{conn.label} is not an input-only site of the consortium")
        return conn.peer_name

    # --- one query ----------------------------------------------------------------------------

    def on_input(self, conn: Connection, body: dict[str, Any]) -> None:
        """An input site's answer to a forwarded query or a model step (its shares' array may
        come before or after)."""
        name = self._sender(conn)
        if body["site"] != name:
            raise ProtocolViolation(f"{conn.label} sent an input message for site {body['site']!r}")
        seeds = body["seeds"]
        if body["verdict"] not in (ACCEPT, REFUSE) or len(seeds) != (2 if body["verdict"] == ACCEPT else 0):
            raise ProtocolViolation(f"{conn.label} sent a malformed input message")
        for s in seeds:
            if not isinstance(s, str) or (s != ARRAY and len(s) != 2 * SEED_BYTES):
                raise ProtocolViolation(f"{conn.label} sent a share seed of the wrong length")
        answer = self._answer(answer_key(body["query_id"], body["step"]), name)
        answer.body = body
        answer.check()

    def on_shares(self, conn: Connection, frame: Frame) -> None:
        """The array component of an input site's shares (an INPUT_SHARES frame keyed by
        :func:`answer_key`)."""
        name = self._sender(conn)
        arr = frame.array
        if arr is None or arr.dtype != np.uint64 or arr.ndim != 1:
            raise ProtocolViolation(f"{conn.label}: input shares must be a 1-D uint64 array")
        answer = self._answer(frame.session, name)
        answer.array = np.array(arr, dtype=np.uint64)
        answer.check()

    def _answer(self, key: bytes, name: str) -> _Answer:
        answer = self._answers.get((key, name))
        if answer is None:
            answer = self._answers[(key, name)] = _Answer()
            while len(self._answers) > MAX_WAITING:
                self._answers.popitem(last=False)
        return answer

    async def forward(self, env: Envelope, policies: Sequence[Policy]) -> None:
        """Send ``env`` and the sites' ``policies`` to every input site (as soon as this member
        compiled the query, so the input sites' local steps run while the members' do)."""
        request = msg.control(
            msg.INPUT_REQUEST,
            self.index,
            envelope=env.to_json(),
            policies={p.site: p.to_json() for p in policies},
        )
        await self._send_all(request)

    async def _send_all(self, frame: Frame) -> None:
        for name in self.sites:
            conn = self._links.get(name)
            if conn is None:
                raise InputSiteFailed(name, f"input site {name} is not connected to site {self.site}")
            await conn.send_frame(frame)

    async def collect(
        self,
        env: Envelope,
        plan_digest: str,
        words: int,
        ledger_digest: str,
        timeout: float,
    ) -> tuple[list[AShare], dict[str, dict[str, Any]]]:
        """This member's shares of the input sites' vectors (``words`` each, in site order) and
        their receipts, once each answered :meth:`forward`; raises naming the first site that
        fails the query (silent, refusing, another plan, another release ledger)."""
        answers = await self._await(env.digest(), INPUTS, timeout)
        for name, body in answers.items():
            if body["digest"] != plan_digest:
                raise InputSiteFailed(name, f"input site {name} compiled a different plan; nothing was shared")
            if body["ledger_digest"] != ledger_digest:
                raise InputSiteFailed(name, f"input site {name} remembers other released results for this analyst")
        shares = [_expand(name, body, words) for name, body in answers.items()]
        return shares, {name: dict(body["receipt"] or {}) for name, body in answers.items()}

    async def step(self, query_id: str, step: int, params: dict[str, Any] | None, words: int, timeout: float) -> U64:
        """A model's step: every input site's vector at the public ``params`` (what the committee
        opened to the sites), as this member's share pairs flattened in site order: what
        :func:`site_agent.models.statement.site_shares` takes after the member's own vector."""
        await self._send_all(msg.control(msg.INPUT_STEP, self.index, query_id=query_id, step=step, params=params))
        answers = await self._await(query_id, step, timeout)
        pairs = [_expand(name, body, words).v.reshape(-1) for name, body in answers.items()]
        return np.concatenate(pairs) if pairs else np.zeros(0, dtype=np.uint64)

    async def _await(self, query_id: str, step: int, timeout: float) -> dict[str, dict[str, Any]]:
        """Each input site's answer for ``step`` of ``query_id``, in site order (its array under
        ``"array"``); a site that sends none in time or refuses fails the query, named."""
        key = answer_key(query_id, step)
        waiting = {name: self._answer(key, name) for name in self.sites}
        try:
            deadline = time.monotonic() + timeout
            answers: dict[str, dict[str, Any]] = {}
            for name, answer in waiting.items():
                try:
                    await asyncio.wait_for(answer.ready.wait(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise InputSiteFailed(
                        name, f"input site {name} sent no inputs within {timeout:g} s; nothing was released"
                    ) from None
                body = answer.body
                assert body is not None
                if body["verdict"] == REFUSE:
                    raise InputSiteRefused(name, body["category"], body["rule"], body["message"])
                answers[name] = {**body, "array": answer.array}
            return answers
        finally:
            for name in waiting:
                self._answers.pop((key, name), None)

    async def tell(self, query_id: str, released: bool, opened: np.ndarray | None) -> None:
        """Best effort: tell every connected input site what became of a query it took part in
        (``opened``: the query sets the released result opened, for its release ledger)."""
        sets = [] if opened is None else opened.astype(bool).tolist()
        frame = msg.control(msg.INPUT_OUTCOME, self.index, query_id=query_id, released=released, opened=sets)
        for name in self.sites:
            conn = self._links.get(name)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.send_frame(frame), 1.0)


def _expand(name: str, body: dict[str, Any], words: int) -> AShare:
    """This member's pair of an input site's shares: its seeds expanded, its array as sent."""
    if body["words"] != words:
        raise ProtocolViolation(f"input site {name} shared {body['words']} words, the plan expects {words}")
    first, second = (bytes.fromhex(s) if s != ARRAY else body["array"] for s in body["seeds"])
    if first is None or second is None:
        raise ProtocolViolation(f"input site {name} sent no array with its seeds")
    return CompressedShare(first, second).expand((words,))


def answer_key(query_id: str, step: int) -> bytes:
    """The key of an input site's answer: the query's session id for its inputs (``step`` is
    :data:`INPUTS`), a digest of it and the step number for a model's steps."""
    try:
        session = msg.session_id(query_id)
    except ValueError:
        raise ProtocolViolation("an input message names a malformed query id") from None
    if step == INPUTS:
        return session
    if not 0 <= step < 2**31:
        raise ProtocolViolation("an input message names a malformed step")
    return hashlib.sha256(b"mpc-jupyter.input-step.v1:" + session + step.to_bytes(4, "big")).digest()[:16]


def check_supported(plan: planning.AnyCompiled, sites: Sequence[str]) -> None:
    """Refuse, naming the limit, a statement input-only sites cannot take part in: record linkage
    (``COUNT(DISTINCT PERSON)`` runs on the committee members' own linkage keys)."""
    if sites and not isinstance(plan, planning.Compiled):
        raise UnsupportedQuery(
            f"this consortium has input-only sites ({', '.join(sites)}): record linkage needs every data "
            "site in the compute committee for now"
        )
