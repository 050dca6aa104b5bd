"""The analyst's client: sign a query, send it to the committee, reconstruct the answer.

``Consortium.connect("DIR/consortium.toml", analyst="alice")`` keeps one mutual-TLS
websocket open to each committee member, on a private event loop in a background thread
(so the synchronous API works inside Jupyter, whose own loop is already running).

A query is one signed envelope sent to all three members. Each member answers with its
pair of shares of the declared outputs, the public result metadata and a signed receipt.
The client checks that the three members agree on the metadata, reconstructs the outputs
(every share component arrives twice, so a wrong share is caught), verifies each receipt
against the site's key in the consortium file, and builds a pandas DataFrame whose
``.attrs`` hold the receipts, the reveal list and timings.

For teaching, ``.attrs`` also keep what the analyst actually received: ``"shares"`` holds, per
member, the first :data:`SHARE_PREVIEW` words of each of its two share components (hex
strings; member *i* holds components *i* and *i+1* mod 3), and ``"plan"`` the public plan the
members ran (its digest is checked against ``"plan_digest"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from site_agent.agent import messages as msg
from site_agent.agent import planning
from site_agent.audit import Receipt, verify_receipt
from site_agent.config import ConsortiumConfig, load_consortium
from site_agent.crypto.certs import client_context, fingerprint, peer_fingerprint
from site_agent.crypto.envelope import sign_envelope
from site_agent.crypto.signing import load_private_key
from site_agent.errors import AuthError, ConfigError, MpcError, ProtocolViolation
from site_agent.mpc.shares import AShare
from site_agent.net.framing import DEFAULT_MAX_FRAME, OUTSIDER, Frame, MsgType, decode, encode_parts
from site_agent.net.mpc_transport import websocket_message
from site_agent.query.dp import DP_PARAM
from site_agent.relay.tunnel import open_tunnel

T = TypeVar("T")

CONSORTIUM_ENV = "MPC_CONSORTIUM"
"""Environment variable naming the consortium file to open when none is given."""

SHARE_PREVIEW = 6
"""How many words of each member's share array ``.attrs["shares"]`` keeps."""

ProgressCallback = Callable[[str, str, float], None]
"""Called as (site, phase, seconds since the query started) while a query runs."""


class QueryFailed(MpcError):
    """A site refused or could not answer; ``site``, ``category`` and ``rule`` say who and why."""

    def __init__(self, site: str, category: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.site, self.category, self.rule = site, category, rule


class ResultPending(MpcError):
    """The committee holds the result for output review: nothing was released yet.

    ``sites`` must approve it before ``deadline`` (Unix time); ``query_id`` names it in
    ``Consortium.pending()`` and in the DPOs' ``mpc-site-agent review`` commands."""

    def __init__(self, query_id: str, sites: list[str], deadline: float) -> None:
        until = dt.datetime.fromtimestamp(deadline, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        super().__init__(
            f"pending review at site {', '.join(sites)} (id {query_id[:16]}, until {until}); "
            "%mpc pending fetches it once approved"
        )
        self.query_id, self.sites, self.deadline = query_id, sites, deadline


@dataclass
class ReviewOutcome:
    """What ``Consortium.pending()`` found: results released since (DataFrames, with the query in
    ``.attrs["query"]``), those still waiting (query id -> sites), and those discarded (query id ->
    why: denied at a site, or expired)."""

    released: list[pd.DataFrame] = field(default_factory=list)
    waiting: dict[str, list[str]] = field(default_factory=dict)
    discarded: dict[str, str] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)
    """Query id -> query text, for every id above."""


class SiteUnavailable(MpcError):
    """A committee member cannot be reached or did not answer in time (``site`` names it)."""

    def __init__(self, site: str, message: str) -> None:
        super().__init__(message)
        self.site = site


@dataclass
class SiteStatus:
    """One member as ``Consortium.status()`` sees it."""

    site: str
    online: bool
    latency_ms: float | None = None
    policy_digest: str = ""
    tables: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, bool] = field(default_factory=dict)
    error: str = ""
    budget: dict[str, Any] = field(default_factory=dict)
    """This analyst's DP budget at the site: spent, remaining, budget, delta, period, queries."""


FAILURE_GRACE_SECONDS = 2.0
"""After a first failure, how long to wait for the other members' answers: the member that
refused reports its own site and rule, while its peers only echo "site X refused", and the
echo may arrive first."""


@dataclass
class _Pending:
    """Answers collected for one query id."""

    session: bytes
    done: asyncio.Event
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    shares: dict[int, np.ndarray] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Members that hold the result for output review, and what they said (``pending``)."""
    answered: set[int] = field(default_factory=set)
    progress: ProgressCallback | None = None

    def fail(self, index: int, failure: dict[str, Any]) -> None:
        """Member ``index`` reported a failure (or its connection was lost)."""
        self.failures.append(failure)
        self.answered.add(index)
        self.check()

    def check(self) -> None:
        """Done once every member answered (metadata and shares, or a failure)."""
        for index in self.shares:
            self.answered.add(index)
        if self.failures:
            self.failed.set()
        if len(self.answered) == 3 and (self.failures or len(self.results) == 3 or len(self.held) == 3):
            self.done.set()


def _analyst_files(consortium: ConsortiumConfig, analyst: str) -> dict[str, Path]:
    base = consortium.path.parent / "analysts" / analyst
    files = {
        "signing": base / "signing" / "key.pem",
        "cert": base / "tls" / "cert.pem",
        "key": base / "tls" / "key.pem",
        "ca": base / "tls" / "ca.pem",
    }
    for path in files.values():
        if not path.exists():
            raise ConfigError(f"analyst {analyst!r}: missing {path}")
    return files


def certificate_problem(cert_path: Path, ca_path: Path, registered_fingerprint: str) -> str:
    """Why an agent may have dropped this analyst's TLS handshake, judged from the client's side.

    A TLS server refuses a client certificate by closing the connection, so the reason has to
    be found here: the certificate's issuer, validity and registration in consortium.toml.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    except (OSError, ValueError) as exc:
        return f"cannot read the certificates to check them ({exc})"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return (
            f"this analyst's certificate ({cert_path}) is not issued by the consortium CA ({ca_path}); "
            f"its issuer is {cert.issuer.rfc4514_string()}"
        )
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return f"this analyst's certificate ({cert_path}) is outside its validity period"
    if fingerprint(cert_path.read_bytes()) != registered_fingerprint:
        return f"this analyst's certificate ({cert_path}) is not the one registered in consortium.toml"
    return "the certificate looks right here; the site may use another consortium CA"


class Consortium:
    """A connection to a consortium's compute committee, as one analyst."""

    def __init__(self, config: ConsortiumConfig, analyst: str, timeout: float = 30.0) -> None:
        if analyst not in config.analysts:
            raise AuthError(f"analyst {analyst!r} is not registered in {config.path}")
        self.config = config
        self.analyst = analyst
        self.timeout = timeout
        files = _analyst_files(config, analyst)
        self._files = files
        self._fingerprint = config.analysts[analyst].tls_fingerprint
        self._key = load_private_key(files["signing"])
        self._ssl = client_context(files["cert"], files["key"], files["ca"])
        self.committee = config.require_committee()
        self._loop = asyncio.new_event_loop()
        # One query at a time per analyst client: every site checks a query against the sets it
        # released to this analyst before (docs/privacy.md), and the sites must agree on that list.
        self._one_at_a_time = threading.Lock()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mpc-jupyter-client", daemon=True)
        self._thread.start()
        self._conns: dict[int, ClientConnection] = {}
        self._readers: dict[int, asyncio.Future[None]] = {}
        self._pending: dict[str, _Pending] = {}
        self._status_waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._review_waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.history: list[pd.DataFrame] = []

    @classmethod
    def connect(cls, path: str | Path | None = None, analyst: str | None = None, timeout: float = 30.0) -> Consortium:
        """Open a consortium file as ``analyst`` (default: its only analyst).

        Without ``path``, the file named by ``$MPC_CONSORTIUM`` (the demo sets it).
        """
        path = path or os.environ.get(CONSORTIUM_ENV)
        if not path:
            raise ConfigError(f"no consortium file given and ${CONSORTIUM_ENV} is not set")
        config = load_consortium(path)
        if analyst is None:
            if len(config.analysts) != 1:
                names = ", ".join(config.analysts) or "none"
                raise ConfigError(f"{path}: name the analyst (analysts: {names})")
            analyst = next(iter(config.analysts))
        return cls(config, analyst, timeout)

    # --- public API ------------------------------------------------------------------------

    def query(
        self,
        text: str,
        params: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        *,
        epsilon: float | None = None,
        dp: bool = False,
    ) -> pd.DataFrame:
        """Run a query; the pooled, policy-checked answer as a DataFrame (receipts in ``.attrs``).

        ``epsilon`` (or ``dp=True`` for the sites' ``epsilon_per_query``) runs it in DP mode
        (docs/privacy-dp.md): every value noised on shares, charged to this analyst's budget at
        every site; ``.attrs["epsilon"]`` and ``.attrs["noise_scale"]`` say how much."""
        with self._one_at_a_time:
            started = time.monotonic()
            answers = self._run(self._ask(text, "run", with_dp(params, epsilon, dp), progress))
        if answers.held:  # every member keeps its shares until the reviewing sites approve
            for site, body in answers.held.items():  # each member's "held" entry is in its log
                verify_receipt(Receipt.from_json(body["receipt"]), self.config.site(site).public_key())
            first = next(iter(answers.held.values()))
            raise ResultPending(first["query_id"], list(first["sites"]), float(first["deadline"]))
        frame = self._assemble(answers, started)
        self.history.append(frame)
        return frame

    def explain(
        self, text: str, params: dict[str, Any] | None = None, *, epsilon: float | None = None, dp: bool = False
    ) -> str:
        """The plan the sites would run, in words (nothing is computed or revealed)."""
        answers = self._run(self._ask(text, "explain", with_dp(params, epsilon, dp), None))
        metas = {json.dumps(json.loads(r["meta"]), sort_keys=True) for r in answers.results.values()}
        if len(metas) != 1:
            raise ProtocolViolation("the committee members explained different plans")
        return str(json.loads(metas.pop())["explain"])

    def pending(self) -> ReviewOutcome:
        """Results held for output review: fetch those every reviewing site approved since (once
        reconstructed, this client confirms receipt and each member deletes its shares; a fetch
        cut off is fetched whole next time), and say which still wait or were discarded."""
        with self._one_at_a_time:
            return self._run(self._reviewed())

    def status(self) -> list[SiteStatus]:
        """Each committee member: online, round-trip latency, policy digest, exposed tables."""
        return self._run(self._status())

    def budget(self) -> pd.DataFrame:
        """This analyst's DP budget at each committee member (its own policy's budget): epsilon
        spent in the current period, remaining, the budget, delta, period and DP queries."""
        rows = [{"site": s.site, **(s.budget if s.online else {"error": s.error})} for s in self.status()]
        return pd.DataFrame(rows).set_index("site")

    def close(self) -> None:
        """Close the connections and stop the background loop."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> Consortium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _connection(self, index: int) -> ClientConnection:
        conn = self._conns.get(index)
        if conn is not None and conn.state.name == "OPEN":
            return conn
        name = self.committee[index]
        site = self.config.site(name)
        address = site.address
        try:
            # A site reached through a relay: the same end-to-end TLS, over a tunnel.
            tunnel = await open_tunnel(site.relay, self._ssl, name, self.timeout) if site.relay else None
            conn = await asyncio.wait_for(
                connect(
                    f"wss://{address.host}:{address.port}",
                    sock=tunnel,
                    ssl=self._ssl,
                    max_size=DEFAULT_MAX_FRAME,
                    compression=None,
                    ping_interval=20,
                ),
                self.timeout,
            )
        except InvalidStatus as exc:  # the agent refused with a reason (e.g. no client certificate)
            reason = exc.response.body.decode(errors="replace").strip() if exc.response.body else str(exc)
            raise SiteUnavailable(name, f"site {name} refused the connection: {reason}") from None
        except (InvalidHandshake, EOFError) as exc:
            problem = certificate_problem(self._files["cert"], self.config.ca_cert, self._fingerprint)
            raise SiteUnavailable(
                name, f"site {name} closed the connection during the TLS handshake: {problem}"
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise SiteUnavailable(
                name, f"site {name}'s certificate is not valid for the consortium CA ({exc.verify_message})"
            ) from None
        except (OSError, TimeoutError) as exc:
            raise SiteUnavailable(name, f"site {name} at {address} cannot be reached: {exc}") from None
        if peer_fingerprint(conn.transport.get_extra_info("ssl_object")) != site.tls_fingerprint:
            await conn.close()
            raise SiteUnavailable(name, f"site {name} presented a certificate the consortium does not register for it")
        self._conns[index] = conn
        self._readers[index] = asyncio.ensure_future(self._reader(index, conn))
        return conn

    async def _send(self, index: int, frame: Frame) -> None:
        conn = await self._connection(index)
        await conn.send(websocket_message(encode_parts(frame)))

    async def _reader(self, index: int, conn: ClientConnection) -> None:
        name = self.committee[index]
        try:
            async for data in conn:
                if isinstance(data, str):
                    continue
                frame = decode(data)
                if frame.sender != index:
                    continue  # a member speaks only for itself
                self._deliver(index, frame)
        except (ConnectionClosed, MpcError):
            pass
        finally:
            for pending in self._pending.values():
                if index not in pending.answered and not pending.done.is_set():
                    pending.fail(
                        index,
                        {"site": name, "category": "peer", "rule": "", "message": f"connection to site {name} closed"},
                    )

    def _deliver(self, index: int, frame: Frame) -> None:
        if frame.type == MsgType.RESULT_SHARES:
            for pending in self._pending.values():
                if pending.session == frame.session and frame.array is not None:
                    pending.shares[index] = np.array(frame.array, dtype=np.uint64)
                    pending.check()
            return
        body = frame.control or {}
        kind = body.get("kind")
        if kind in (msg.STATUS, msg.REVIEW_LIST):
            waiter = (self._status_waiters if kind == msg.STATUS else self._review_waiters).pop(index, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(body)
            return
        pending_for = self._pending.get(str(body.get("query_id", "")))
        if pending_for is None:
            return
        if kind == msg.PROGRESS and pending_for.progress is not None:
            pending_for.progress(body["site"], body["phase"], float(body["seconds"]))
        elif kind == msg.RESULT:
            pending_for.results[self.committee[index]] = body
            if body["meta"] and "explain" in json.loads(body["meta"]):
                pending_for.shares[index] = np.zeros((2, 0), dtype=np.uint64)
            pending_for.check()
        elif kind == msg.FAILURE:
            pending_for.fail(index, body)
        elif kind == msg.PENDING:
            pending_for.held[self.committee[index]] = body
            pending_for.answered.add(index)
            pending_for.check()

    async def _ask(self, text: str, mode: str, params: dict[str, Any], progress: ProgressCallback | None) -> _Pending:
        env = sign_envelope(self._key, query=text, consortium=self.config.id, analyst=self.analyst, params=params)
        query_id = env.digest()
        pending = _Pending(session=msg.session_id(query_id), done=asyncio.Event(), progress=progress)
        self._pending[query_id] = pending
        try:
            frame = msg.control(msg.QUERY, OUTSIDER, MsgType.QUERY, envelope=env.to_json(), mode=mode)
            await asyncio.gather(*(self._send(i, frame) for i in range(3)))
            deadline = asyncio.get_running_loop().time() + self.timeout + 5
            done = asyncio.ensure_future(pending.done.wait())
            failed = asyncio.ensure_future(pending.failed.wait())
            try:
                await asyncio.wait([done, failed], timeout=self.timeout + 5, return_when=asyncio.FIRST_COMPLETED)
                if pending.failures and not done.done():
                    left = deadline - asyncio.get_running_loop().time()
                    await asyncio.wait([done], timeout=max(0.0, min(FAILURE_GRACE_SECONDS, left)))
            finally:
                done.cancel()
                failed.cancel()
            if not pending.failures and not pending.done.is_set():
                silent = [self.committee[i] for i in range(3) if i not in pending.answered]
                raise SiteUnavailable(silent[0], f"site {silent[0]} did not answer within {self.timeout + 5:g} s")
        finally:
            del self._pending[query_id]
        if pending.failures:
            raise _failure_error(pending.failures)
        return pending

    def _assemble(self, answers: _Pending, started: float) -> pd.DataFrame:
        metas = {site: json.loads(r["meta"]) for site, r in answers.results.items()}
        first = next(iter(metas.values()))
        if any(m != first for m in metas.values()):
            raise ProtocolViolation("the committee members disagree on the result layout")
        shares = [AShare(answers.shares[i].reshape(2, -1)) for i in range(3)]
        signed = {site: result["receipt"] for site, result in answers.results.items()}
        for result in answers.results.values():  # each member relays the input-only sites' receipts
            for site, receipt in result["stats"].get("input_receipts", {}).items():
                if site in self.config.input_sites:
                    signed.setdefault(site, receipt)
        receipts = []
        for site, raw in signed.items():
            receipt = Receipt.from_json(raw)
            verify_receipt(receipt, self.config.site(site).public_key())
            receipts.append(receipt)
        frame = planning.assemble(first, shares)
        frame.attrs.update(
            {
                "receipts": [r.to_json() for r in receipts],
                "seconds": time.monotonic() - started,
                "sites": list(self.committee),
                "stats": {site: r["stats"] for site, r in answers.results.items()},
                "shares": {self.committee[i]: _share_preview(answers.shares[i], i) for i in range(3)},
                "plan": first["plan"],
            }
        )
        return frame

    async def _status(self) -> list[SiteStatus]:
        async def one(index: int) -> SiteStatus:
            name = self.committee[index]
            try:
                fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._status_waiters[index] = fut
                t0 = time.monotonic()
                await self._send(index, msg.control(msg.STATUS_REQUEST, OUTSIDER, MsgType.STATUS))
                body = await asyncio.wait_for(fut, min(self.timeout, 10.0))
                return SiteStatus(
                    site=name,
                    online=True,
                    latency_ms=(time.monotonic() - t0) * 1000,
                    policy_digest=body["policy_digest"],
                    tables=body["tables"],
                    peers=body["peers"],
                    budget=body["budget"],
                )
            except (MpcError, TimeoutError, OSError) as exc:
                return SiteStatus(site=name, online=False, error=str(exc) or "no answer")

        return list(await asyncio.gather(*(one(i) for i in range(3))))

    async def _reviewed(self) -> ReviewOutcome:
        """Ask every member which of this analyst's results it holds; fetch those that all three
        hold as approved (a member that has not yet heard a decision says pending: ask again).
        A result some member lists as released was received already (its receipt confirmed
        there): confirm it to the others, whose confirmation was lost."""

        async def listing(index: int) -> dict[str, Any]:
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._review_waiters[index] = fut
            await self._send(index, msg.control(msg.REVIEW_LIST_REQUEST, OUTSIDER))
            try:
                return await asyncio.wait_for(fut, self.timeout)
            except TimeoutError:
                name = self.committee[index]
                raise SiteUnavailable(name, f"site {name} did not answer within {self.timeout:g} s") from None

        lists = await asyncio.gather(*(listing(i) for i in range(3)))
        items = [{item["query_id"]: item for item in body["items"]} for body in lists]
        outcome = ReviewOutcome()
        received = []
        for query_id in sorted(set().union(*items)):
            seen = [member.get(query_id) for member in items]
            known = [s for s in seen if s is not None]
            if any(s["state"] == "released" for s in known):
                if any(s["state"] == "approved" for s in known):
                    received.append(query_id)
                continue
            outcome.queries[query_id] = known[0]["query"]
            denied = sorted({site for s in known for site in s["denied_by"]})
            expired = [s for s in known if s["state"] == "expired"]
            if denied:
                outcome.discarded[query_id] = f"denied at site {', '.join(denied)}"
            elif expired and expired[0]["keep_until"] is not None:
                until = dt.datetime.fromtimestamp(expired[0]["keep_until"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
                outcome.discarded[query_id] = f"expired: approved, but not fetched before {until}"
            elif expired:
                outcome.discarded[query_id] = "expired before every reviewing site approved"
            elif all(s is not None and s["state"] == "approved" for s in seen):
                continue  # fetched below
            else:
                outcome.waiting[query_id] = sorted({site for s in known for site in s["waiting"]})
        ready = [q for q in outcome.queries if q not in outcome.waiting and q not in outcome.discarded]
        try:
            for query_id in ready:
                started = time.monotonic()
                answers = await self._fetch(query_id)
                frame = self._assemble(answers, started)
                frame.attrs["query"] = outcome.queries[query_id]
                outcome.released.append(frame)
                self.history.append(frame)
                received.append(query_id)
        finally:  # what was reconstructed is confirmed even if a later fetch fails
            await self._confirm(received)
        return outcome

    async def _confirm(self, query_ids: list[str]) -> None:
        """Tell every member this client reconstructed these results: they delete their shares.
        Best effort: a member that misses it keeps them, and the next ``pending()`` confirms again
        (or the retention, ``review_keep_hours``, ends)."""
        if not query_ids:
            return
        frame = msg.control(msg.REVIEW_CONFIRM, OUTSIDER, query_ids=query_ids)
        for index in range(3):
            with contextlib.suppress(MpcError, OSError, ConnectionClosed):
                await self._send(index, frame)

    async def _fetch(self, query_id: str) -> _Pending:
        """One approved result: every member's shares, metadata and receipt, as for a query."""
        pending = _Pending(session=msg.session_id(query_id), done=asyncio.Event())
        self._pending[query_id] = pending
        try:
            frame = msg.control(msg.REVIEW_FETCH, OUTSIDER, query_ids=[query_id])
            await asyncio.gather(*(self._send(i, frame) for i in range(3)))
            try:
                await asyncio.wait_for(pending.done.wait(), self.timeout)
            except TimeoutError:
                silent = [self.committee[i] for i in range(3) if i not in pending.answered]
                raise SiteUnavailable(silent[0], f"site {silent[0]} did not send the reviewed result") from None
        finally:
            del self._pending[query_id]
        if pending.failures:
            raise _failure_error(pending.failures)
        return pending

    async def _close(self) -> None:
        for conn in self._conns.values():
            with contextlib.suppress(Exception):
                await conn.close()


def with_dp(params: dict[str, Any] | None, epsilon: float | None, dp: bool) -> dict[str, Any]:
    """The envelope's parameters, with the DP request when ``epsilon`` is given or ``dp`` is set."""
    out = dict(params or {})
    if epsilon is not None or dp:
        out[DP_PARAM] = {"epsilon": None if epsilon is None else float(epsilon)}
    return out


def _share_preview(array: np.ndarray, index: int) -> dict[str, Any]:
    """The first words a member sent: its two share components, as 16-digit hex strings."""
    pair = array.reshape(2, -1)[:, :SHARE_PREVIEW]
    return {
        "components": [index, (index + 1) % 3],
        "words": [[f"{int(w):016x}" for w in row] for row in pair],
        "size": int(array.size // 2),
    }


def _failure_error(failures: list[dict[str, Any]]) -> QueryFailed:
    """The most telling failure: a policy or query refusal beats a peer's echo of it."""
    order = {"policy": 0, "query": 1, "auth": 2, "refused": 3, "peer": 4, "failed": 5}
    best = min(failures, key=lambda f: order.get(f.get("category", ""), 9))
    return QueryFailed(best["site"], best["category"], best.get("rule", ""), best["message"])
