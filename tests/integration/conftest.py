"""Running consortia for the integration tests: real agent processes, real TLS, real DuckDB.

The lifelines ``lung`` data is split by institution into three hospitals (north, central,
south). Five local consortia start together, in parallel, once per test session:

* ``lung``: the main one; its sites' policies differ on purpose (central does not expose
  ``meal_cal``, south declares ``pat_karno`` an identifier) so refusals must name the site.
* ``faulty`` and ``killable``: ``query_timeout_seconds = 5``, for silent, stopped and killed
  members (each test there leaves its consortium damaged, so they get their own).
* ``strict``: south's policy forbids aggregate statements.
* ``restartable``: its agents are restarted one at a time (SIGTERM or kill -9, policy changes).

``Wire`` speaks the wire protocol directly (websockets, frames, signed envelopes) for the
tests that send what the analyst's client never would.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mpc_jupyter.client import Consortium
from mpc_jupyter.demo.consortium import AgentProcesses, SiteSpec, TableSpec, build_consortium
from site_agent.agent import messages as msg
from site_agent.config import ConsortiumConfig, load_agent, load_consortium
from site_agent.crypto.certs import client_context
from site_agent.crypto.envelope import Envelope, sign_envelope
from site_agent.crypto.signing import Ed25519PrivateKey, load_private_key
from site_agent.net.framing import DEFAULT_MAX_FRAME, Frame, MsgType, decode, encode_parts

from ..lung import LUNG_SCHEMA, SITES, lung_by_site

FAULT_TIMEOUT = 5
SECOND = "second"
"""Every consortium's second analyst (:attr:`Running.second`)."""
COLUMNS = ("id", "inst", "time", "status", "age", "sex", "ph_ecog", "ph_karno", "pat_karno", "meal_cal", "wt_loss")


@dataclass
class Running:
    """One consortium with its agents running, and the data it was made of."""

    config: Path
    procs: AgentProcesses
    frames: dict[str, pd.DataFrame]
    _client: Consortium | None = field(default=None, repr=False)
    _second: Consortium | None = field(default=None, repr=False)

    @property
    def dir(self) -> Path:
        return self.config.parent

    @property
    def pooled(self) -> pd.DataFrame:
        return pd.concat(list(self.frames.values()), ignore_index=True)

    @property
    def consortium(self) -> ConsortiumConfig:
        return load_consortium(self.config)

    @property
    def second(self) -> Consortium:
        """A second analyst's client: its own release ledger and budget at every site, for a test
        whose refusal must not depend on what earlier tests released to the first analyst."""
        if self._second is None:
            self._second = Consortium.connect(self.config, SECOND)
        return self._second

    @property
    def client(self) -> Consortium:
        """One analyst client for the session (connections stay open between queries)."""
        if self._client is None:
            self._client = Consortium.connect(self.config, "analyst")
        return self._client

    def agent_toml(self, site: str) -> Path:
        return self.dir / "sites" / site / "agent.toml"

    def audit_path(self, site: str) -> Path:
        return load_agent(self.agent_toml(site)).audit_log

    def audit(self, site: str) -> list[dict[str, Any]]:
        """The site's audit entries so far."""
        path = self.audit_path(site)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def audit_counts(self) -> dict[str, int]:
        return {s: len(self.audit(s)) for s in SITES}

    def wait_audit(self, site: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Entries after the first ``count`` once there is at least one (the agent writes them async)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.audit(site)
            if len(entries) > count or time.monotonic() > deadline:
                return entries[count:]
            time.sleep(0.05)

    def analyst_key(self, analyst: str = "analyst") -> Ed25519PrivateKey:
        return load_private_key(self.dir / "analysts" / analyst / "signing" / "key.pem")

    def analyst_tls(self, analyst: str = "analyst") -> ssl.SSLContext:
        base = self.dir / "analysts" / analyst / "tls"
        return client_context(base / "cert.pem", base / "key.pem", base / "ca.pem")

    def site_tls(self, site: str) -> ssl.SSLContext:
        """A client context with a committee member's own certificate (a misbehaving member)."""
        base = self.dir / "sites" / site / "tls"
        return client_context(base / "cert.pem", base / "key.pem", base / "ca.pem")

    def envelope(self, query: str, *, analyst: str = "analyst", now: float | None = None) -> Envelope:
        return sign_envelope(
            self.analyst_key(analyst), query=query, consortium=self.consortium.id, analyst=analyst, now=now
        )

    def wire(self, ssl_context: ssl.SSLContext | None = None) -> Wire:
        return Wire(self, ssl_context or self.analyst_tls())

    def close(self) -> None:
        for client in (self._client, self._second):
            if client is not None:
                client.close()
        self.procs.stop()


@dataclass
class Answer:
    """Every frame one site sent back for one request, in order."""

    site: str
    frames: list[Frame]
    closed: str = ""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f.control for f in self.frames if f.control is not None and f.control.get("kind") == kind]

    @property
    def failure(self) -> dict[str, Any] | None:
        found = self.of(msg.FAILURE)
        return found[0] if found else None

    @property
    def error(self) -> str | None:
        found = self.of("error")
        return str(found[0]["message"]) if found else None

    @property
    def released(self) -> bool:
        """Whether anything that depends on the data reached the sender."""
        return bool(self.of(msg.RESULT)) or any(f.type == MsgType.RESULT_SHARES for f in self.frames)


class Wire:
    """The agents' wire protocol spoken directly, as whoever ``ssl_context`` authenticates."""

    def __init__(self, running: Running, ssl_context: ssl.SSLContext) -> None:
        self.running = running
        self.ssl = ssl_context

    def uri(self, site: str) -> str:
        return f"wss://{self.running.consortium.site(site).address}"

    async def open(self, site: str) -> ClientConnection:
        return await connect(self.uri(site), ssl=self.ssl, max_size=DEFAULT_MAX_FRAME, compression=None)

    async def exchange(self, site: str, message: bytes | Sequence[bytes], wait: float = 5.0) -> Answer:
        """Send one raw websocket message; collect replies until the first ERROR or ``wait`` s."""
        async with await self.open(site) as ws:
            await ws.send(message if isinstance(message, bytes) else list(message))
            return await _collect(site, ws, wait, until=lambda f: f.type == MsgType.ERROR)

    async def ask(
        self, envelope: Envelope, sites: Sequence[str] = SITES, mode: str = "run", wait: float = 20.0
    ) -> dict[str, Answer]:
        """Send a QUERY with ``envelope`` to ``sites``; each one's frames up to its final answer."""
        frame = Frame(MsgType.QUERY, control={"kind": msg.QUERY, "envelope": envelope.to_json(), "mode": mode})
        header, payload = encode_parts(frame)

        async def one(site: str) -> Answer:
            async with await self.open(site) as ws:
                await ws.send([header, payload])
                return await _collect(site, ws, wait, until=_final)

        answers = await asyncio.gather(*(one(s) for s in sites))
        return dict(zip(sites, answers, strict=True))


def _final(frame: Frame) -> bool:
    return frame.type in (MsgType.RESULT_SHARES, MsgType.ERROR) or frame.kind == msg.FAILURE


async def _collect(site: str, ws: ClientConnection, wait: float, until: Any) -> Answer:
    answer = Answer(site, [])
    deadline = asyncio.get_running_loop().time() + wait
    try:
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            data = await asyncio.wait_for(ws.recv(), left)
            assert isinstance(data, bytes), "agents send binary frames only"
            frame = decode(data)
            answer.frames.append(frame)
            if until(frame):
                break
    except TimeoutError:
        pass
    except ConnectionClosed as exc:
        answer.closed = f"{exc.rcvd.code if exc.rcvd else ''} {exc.rcvd.reason if exc.rcvd else ''}".strip() or "closed"
    return answer


def run(coro: Any) -> Any:
    """Run a coroutine to completion from a synchronous test."""
    return asyncio.run(coro)


# --- building and starting the consortia ----------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """One table split over the three sites, with its schema.toml text."""

    table: str
    schema: str
    frames: Callable[[], dict[str, pd.DataFrame]]


LUNG = Dataset("lung", LUNG_SCHEMA, lung_by_site)


def _sites(
    folder: Path, frames: dict[str, pd.DataFrame], policies: dict[str, dict[str, Any]], table: str = "lung"
) -> list[SiteSpec]:
    folder.mkdir(parents=True)
    specs = []
    for site, df in frames.items():
        path = folder / f"{site}.csv"
        df.to_csv(path, index=False)
        extra = dict(policies.get(site, {}))
        spec = TableSpec(path, columns=extra.pop("columns", None), identifiers=extra.pop("identifiers", ["id"]))
        specs.append(SiteSpec(site, {table: spec}, **extra))
    return specs


Customize = Callable[[Path], None]
"""Called with a consortium's folder after it is built and before its agents start (a site's
tables moved to another engine or renamed, for instance)."""


def start_consortium(
    root: Path,
    policies: dict[str, dict[str, Any]],
    timeout: int | None = None,
    data: Dataset = LUNG,
    customize: Customize | None = None,
) -> Running:
    """Build a consortium of ``data`` under ``policies`` in ``root`` and start its agents (one per
    frame of ``data``; a site whose policy says ``"compute": False`` is an input-only site)."""
    frames = data.frames()
    config = build_consortium(
        root / "consortium",
        _sites(root / "data", frames, policies, data.table),
        data.schema,
        more_analysts=(SECOND,),
    )
    if timeout is not None:
        for site in frames:
            path = config.parent / "sites" / site / "agent.toml"
            text = path.read_text()
            assert "query_timeout_seconds = 30" in text
            path.write_text(text.replace("query_timeout_seconds = 30", f"query_timeout_seconds = {timeout}"))
    if customize is not None:
        customize(config.parent)
    procs = AgentProcesses(config.parent, list(frames))  # the three members, then any input-only sites
    procs.start()
    return Running(config, procs, frames)


def start_retrying(
    root: Path,
    policies: dict[str, dict[str, Any]],
    timeout: int | None = None,
    data: Dataset = LUNG,
    customize: Customize | None = None,
) -> Running:
    """``start_consortium``, once more in a fresh folder (new ports) if an agent could not bind
    its port: the ports are picked free but another process on the machine may take one before
    the agent binds it."""
    try:
        return start_consortium(root, policies, timeout, data, customize)
    except RuntimeError as exc:
        if "address already in use" not in str(exc):
            raise
        return start_consortium(root.with_name(root.name + "-again"), policies, timeout, data, customize)


CONSORTIA: dict[str, tuple[dict[str, dict[str, Any]], int | None]] = {
    "lung": (
        {
            "central": {"columns": [c for c in COLUMNS if c not in ("id", "meal_cal")]},
            "south": {"identifiers": ["id", "pat_karno"]},
        },
        None,
    ),
    "faulty": ({}, FAULT_TIMEOUT),
    "killable": ({}, FAULT_TIMEOUT),
    "strict": ({"south": {"statement_kinds": ["model"]}}, None),
    "restartable": ({}, FAULT_TIMEOUT),
}


@pytest.fixture(scope="session")
def consortia(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    """All five consortia, started in parallel (agents take a few seconds to come up)."""
    root = tmp_path_factory.mktemp("integration")
    with ThreadPoolExecutor(len(CONSORTIA)) as pool:
        futures = {name: pool.submit(start_retrying, root / name, *spec) for name, spec in CONSORTIA.items()}
        started: dict[str, Running] = {}
        errors = []
        for name, fut in futures.items():
            try:
                started[name] = fut.result()
            except Exception as exc:  # stop whatever did start before failing the session
                errors.append(f"{name}: {exc}")
    if errors:
        for r in started.values():
            r.close()
        pytest.fail("consortia did not start: " + "; ".join(errors))
    yield started
    for r in started.values():
        r.close()


@pytest.fixture(scope="session")
def lung(consortia: dict[str, Running]) -> Running:
    return consortia["lung"]


@pytest.fixture(scope="session")
def pooled(lung: Running) -> pd.DataFrame:
    """The three sites' rows pooled in the clear: the reference for every number."""
    return lung.pooled


@pytest.fixture(scope="module")
def faulty(consortia: dict[str, Running]) -> Running:
    return consortia["faulty"]


@pytest.fixture(scope="module")
def killable(consortia: dict[str, Running]) -> Running:
    return consortia["killable"]


@pytest.fixture(scope="module")
def restartable(consortia: dict[str, Running]) -> Running:
    return consortia["restartable"]


@pytest.fixture(scope="module")
def strict(consortia: dict[str, Running]) -> Running:
    return consortia["strict"]
