"""Lost committee links come back: the lower-index member of each pair re-dials, a member that
starts while a peer is down still serves (without ``require_links``), and every link-up is
reported to the listeners (the daemon sends its policy then)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from site_agent.crypto.certs import client_context, server_context
from site_agent.errors import PeerDisconnected
from site_agent.net.loopback import NAMES, _program, free_ports, members
from site_agent.net.mesh import REDIAL_MAX, Connection, Member, Mesh, members_from

from .conftest import Pki

BACK_WITHIN = 10 * REDIAL_MAX
"""Liveness bound for a link to come back: ten times the longest wait between two dials."""


def _mesh(pki: Pki, cfg: list[Member], i: int, connect_timeout: float = 20.0) -> Mesh:
    p = pki.paths(NAMES[i])
    return Mesh(
        i,
        cfg,
        server_context(p["cert"], p["key"], p["ca"]),
        client_context(p["cert"], p["key"], p["ca"]),
        connect_timeout=connect_timeout,
    )


async def _session(meshes: list[Mesh], sid: bytes) -> list[Any]:
    job = {"op": "mul_fixed", "n": 100, "seed": 5}
    return await asyncio.gather(*(m.run(sid, _program(job, m.index), 5.0) for m in meshes))


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("restarted", [0, 1, 2])
def test_a_restarted_member_gets_its_links_back(pki: Pki, restarted: int) -> None:
    async def scenario() -> tuple[list[Any], list[int], float]:
        cfg = members_from(members(free_ports(3)))
        meshes = [_mesh(pki, cfg, i) for i in range(3)]
        ups: list[int] = []

        async def up(peer: int, conn: Connection) -> None:
            ups.append(peer)

        others = [m for m in meshes if m.index != restarted]
        others[0].on_link_up(up)
        await asyncio.gather(*(m.start() for m in meshes))
        try:
            await _session(meshes, b"A" * 16)
            await meshes[restarted].close()
            await _until(lambda: all(restarted not in m.links for m in others))
            # a session while the member is down fails at once, naming it
            with pytest.raises(PeerDisconnected) as err:
                await others[0].run(b"B" * 16, _program({"op": "mul_fixed", "n": 10, "seed": 1}, others[0].index), 5.0)
            assert err.value.peer == restarted
            t0 = time.monotonic()
            meshes[restarted] = _mesh(pki, cfg, restarted, connect_timeout=BACK_WITHIN)
            await meshes[restarted].start()  # its lower-index peers re-dial it, it dials the higher ones
            seconds = time.monotonic() - t0
            await _until(lambda: all(restarted in m.links for m in others), BACK_WITHIN)
            return await _session(meshes, b"C" * 16), ups, seconds
        finally:
            await asyncio.gather(*(m.close() for m in meshes))

    out, ups, seconds = asyncio.run(scenario())
    assert all(np.array_equal(out[0], r) for r in out)
    assert ups.count(restarted) == 2, ups  # up at start and up again after the restart
    assert seconds < BACK_WITHIN, f"{seconds:.1f} s to get the links back"


def test_a_member_starts_while_a_peer_is_down_and_links_when_it_comes(pki: Pki) -> None:
    async def scenario() -> list[Any]:
        cfg = members_from(members(free_ports(3)))
        meshes = [_mesh(pki, cfg, i, connect_timeout=0.5) for i in range(3)]
        # member 2 is down: 0 and 1 start anyway (their links to 2 missing) and keep dialing it
        await asyncio.gather(*(meshes[i].start(require_links=False) for i in (0, 1)))
        try:
            assert meshes[0].missing() == [2] and meshes[1].missing() == [2]
            await asyncio.sleep(1.0)  # a few failed dials, backing off
            t0 = time.monotonic()
            await meshes[2].start(require_links=False)
            await _until(lambda: all(not m.missing() for m in meshes), BACK_WITHIN)
            assert time.monotonic() - t0 < BACK_WITHIN  # the dialing did not stop
            return await _session(meshes, b"D" * 16)
        finally:
            await asyncio.gather(*(m.close() for m in meshes))

    out = asyncio.run(scenario())
    assert all(np.array_equal(out[0], r) for r in out)


def test_start_requiring_links_still_fails_naming_the_missing_peer(pki: Pki) -> None:
    async def scenario() -> None:
        cfg = members_from(members(free_ports(3)))
        await _mesh(pki, cfg, 0, connect_timeout=0.5).start()

    with pytest.raises(PeerDisconnected) as err:
        asyncio.run(scenario())
    assert "party 1 (hospital-b)" in str(err.value)
