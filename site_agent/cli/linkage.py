"""``mpc-site-agent linkage``: a member's OPRF key share, and a site's linkage keys.

* ``linkage keygen --config agent.toml``: writes this member's share k_i of the linkage PRF key
  (``linkage.key`` beside the signing key, mode 0600). Once per member, at setup; the agent
  loads it when a site first asks. A new share changes every site's keys (all prepare again).
* ``linkage prepare --config agent.toml``: reads the consortium's declared identifier
  (``[linkage]`` in ``schema.toml``) for every person of the declared table at this site,
  normalises it (:mod:`site_agent.linkage.identifiers`), runs the OPRF with the three members
  over mutual TLS (batches of at most :data:`site_agent.agent.linkage.MAX_POINTS` blinded
  points, each split into frames under the frame limit and audited by every member), and
  writes ``_linkage(person, key)`` to ``linkage.duckdb`` beside ``agent.toml``. Prints counts
  and timings for this site only.

One identifier per person: a person whose rows carry different identifiers keeps the smallest
normalised one; persons without one (a missing part) get no key and are counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from websockets.asyncio.client import connect

from ..agent import planning
from ..agent.data import open_tables
from ..agent.linkage import MAX_POINTS, batch_frames
from ..config import AgentConfig, ConsortiumConfig, load_agent, load_consortium
from ..crypto.certs import client_context, peer_fingerprint
from ..data.connector import quote
from ..errors import AuthError, MpcError, ProtocolViolation
from ..linkage import oprf
from ..linkage.declaration import KEYS_TABLE, Linkage, key_path, keys_db, load_linkage, write_key_share
from ..linkage.identifiers import normalise, one_per_person
from ..mpc.ring import U64
from ..net.framing import DEFAULT_MAX_FRAME, OUTSIDER, Frame, MsgType, decode, encode_parts
from ..relay.tunnel import open_tunnel

TIMEOUT_SECONDS = 600.0


def cmd_keygen(args: argparse.Namespace) -> int:
    try:
        config = load_agent(args.config)
        path = key_path(config)
        if path.exists():
            raise MpcError(f"{path} exists: a new share would change every site's linkage keys; nothing written")
        write_key_share(path)
    except MpcError as exc:
        print(f"linkage keygen: {exc}")
        return 1
    print(f"wrote this member's linkage key share to {path}")
    return 0


def identifiers(config: AgentConfig, linkage: Linkage) -> tuple[pd.Series, int]:
    """This site's persons and their normalised identifiers (one each); and how many persons
    have none."""
    con = open_tables({linkage.table: config.tables[linkage.table]})
    try:
        cols = ", ".join(quote(c) for c in (linkage.person, *linkage.parts))
        frame = pd.DataFrame(dict(con.execute(f"SELECT DISTINCT {cols} FROM {quote(linkage.table)}").fetchnumpy()))
    finally:
        con.close()
    persons = frame[linkage.person]
    one = one_per_person(persons, normalise(frame, linkage.parts))
    return one, int(persons.nunique() - one.size)


async def _ask(
    consortium: ConsortiumConfig,
    ctx: ssl.SSLContext,
    me: str,
    member: str,
    message: bytes,
    timeout: float,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> bytes:
    """One member's answer to the blinded points, over a fresh mutual-TLS connection: one batch
    of at most :data:`MAX_POINTS` points after the other, each in frames of at most
    ``max_frame`` bytes (:func:`site_agent.agent.linkage.batch_frames`), answered frame for frame."""
    committee = consortium.require_committee()
    site = consortium.site(member)
    tunnel = await open_tunnel(site.relay, ctx, member, timeout) if site.relay else None
    async with connect(
        f"wss://{site.address.host}:{site.address.port}",
        sock=tunnel,
        ssl=ctx,
        max_size=max_frame,
        compression=None,
        open_timeout=timeout,
    ) as ws:
        if peer_fingerprint(ws.transport.get_extra_info("ssl_object")) != site.tls_fingerprint:
            raise AuthError(f"site {member} presented a certificate the consortium does not register for it")
        # This site's own agent sees its own name from outside; the others see a committee member.
        sender = OUTSIDER if member == me else committee.index(me)
        answers = []
        for start in range(0, len(message), MAX_POINTS * oprf.POINT_BYTES):
            session = os.urandom(16)
            frames = batch_frames(message[start : start + MAX_POINTS * oprf.POINT_BYTES], session, sender, max_frame)
            for frame in frames:
                await ws.send(list(encode_parts(frame, max_frame)))
            for sent in frames[1:]:
                answers.append(await _answer(ws, member, sent, timeout, max_frame))
        return b"".join(answers)


async def _answer(ws: Any, member: str, sent: Frame, timeout: float, max_frame: int) -> bytes:
    """The member's answer to one frame of points: same session, same number, same size."""
    data = await asyncio.wait_for(ws.recv(), timeout)
    if not isinstance(data, bytes):
        raise ProtocolViolation(f"site {member} sent a text message")
    frame = decode(data, max_frame)
    if frame.type == MsgType.ERROR:
        raise MpcError(str((frame.control or {}).get("message", f"site {member} refused")))
    if frame.type != MsgType.LINKAGE or frame.session != sent.session or frame.array is None:
        raise ProtocolViolation(f"site {member} did not answer the linkage request")
    assert sent.array is not None
    if frame.seq != sent.seq or frame.array.dtype != np.dtype("<u8") or frame.array.size != sent.array.size:
        raise ProtocolViolation(f"site {member} answered frame {frame.seq} ({frame.array.size} words) for {sent.seq}")
    return frame.array.tobytes()


async def evaluate_with_committee(
    config: AgentConfig,
    consortium: ConsortiumConfig,
    ids: list[bytes],
    timeout: float = TIMEOUT_SECONDS,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> tuple[U64, dict[str, float]]:
    """The linkage keys of ``ids``: blind, the batches to every member (concurrently), unblind.
    ``max_frame`` is the largest frame sent or accepted (the agents' limit; tests lower it)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    blinded = await asyncio.to_thread(oprf.blind, ids)
    timings["blind"] = time.perf_counter() - t0
    ctx = client_context(config.tls_cert, config.tls_key, config.ca_cert)
    t1 = time.perf_counter()
    members = consortium.require_committee()
    answers = await asyncio.gather(
        *(_ask(consortium, ctx, config.site, m, blinded.message, timeout, max_frame) for m in members)
    )
    timings["members"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    keys = await asyncio.to_thread(oprf.finalize, blinded, answers)
    timings["unblind"] = time.perf_counter() - t2
    return keys, timings


def write_keys(path: Path, persons: pd.Index, keys: U64) -> None:
    """``_linkage(person, key)`` in a DuckDB file of the site's (replaced whole)."""
    frame = pd.DataFrame({"person": persons.to_numpy(), "key": keys.view(np.int64)})
    con = duckdb.connect(str(path))
    try:
        con.register("fresh", frame)
        con.execute(f"CREATE OR REPLACE TABLE {KEYS_TABLE} AS SELECT person, key FROM fresh")
    finally:
        con.close()


def cmd_prepare(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        config = load_agent(args.config)
        consortium = load_consortium(config.consortium)
        schema = planning.load_schema(consortium)
        linkage = load_linkage(consortium.path.parent / planning.SCHEMA_FILE, schema)
        if config.site not in consortium.data_sites or linkage.table not in config.tables:
            raise MpcError(f"site {config.site!r} serves no table {linkage.table!r}: nothing to link")
        t0 = time.perf_counter()
        ids, missing = identifiers(config, linkage)
        read = time.perf_counter() - t0
        keys, timings = asyncio.run(evaluate_with_committee(config, consortium, ids.tolist()))
        write_keys(keys_db(config), ids.index, keys)
    except (MpcError, OSError) as exc:
        print(f"linkage prepare: {exc}")
        return 1
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in {"read": read, **timings}.items())
    print(
        f"linkage keys for {len(ids)} persons written to {keys_db(config)} ({missing} without an identifier); "
        f"{time.perf_counter() - started:.2f} s: {steps}"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    linkage = sub.add_parser("linkage", help="record linkage: key shares and linkage keys")
    cmds = linkage.add_subparsers(dest="linkage_command", required=True)
    keygen = cmds.add_parser("keygen", help="write this member's share of the linkage PRF key")
    keygen.add_argument("--config", required=True)
    keygen.set_defaults(func=cmd_keygen)
    prepare = cmds.add_parser("prepare", help="derive this site's linkage keys with the committee")
    prepare.add_argument("--config", required=True)
    prepare.set_defaults(func=cmd_prepare)
