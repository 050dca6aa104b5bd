"""run_party over in-process links: results, and every check on incoming frames."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from site_agent.errors import PeerDisconnected, PeerTimeout, ProtocolError, ProtocolViolation
from site_agent.mpc.arithmetic import mul_fixed, open_all
from site_agent.mpc.party import Party, PartyMachine, Protocol
from site_agent.mpc.randomness import Randomness
from site_agent.net.framing import Frame, MsgType, encode
from site_agent.net.loopback import FP, plain_inputs, shares_of
from site_agent.net.mpc_transport import Parts, run_party
from site_agent.net.session import derive_key, run_session

SID = b"S" * 16


class QueueLink:
    """One direction pair of an in-process pipe; ``tamper`` may rewrite outgoing frames."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self.inbox, self.outbox = inbox, outbox
        self.tamper: Callable[[bytes], bytes] | None = None

    async def send(self, parts: Parts) -> None:
        data = b"".join(bytes(p) for p in parts)
        await self.outbox.put(self.tamper(data) if self.tamper else data)

    async def recv(self) -> bytes:
        return await self.inbox.get()


def wire() -> dict[int, dict[int, QueueLink]]:
    q = {(a, b): asyncio.Queue() for a in range(3) for b in range(3) if a != b}
    return {i: {j: QueueLink(q[(j, i)], q[(i, j)]) for j in range(3) if j != i} for i in range(3)}


def program(n: int) -> Callable[[int], Callable[[Party], Protocol[np.ndarray]]]:
    x, y = plain_inputs(3, n)

    def for_member(i: int) -> Callable[[Party], Protocol[np.ndarray]]:
        xs, ys = shares_of(FP.encode(x), 3, i), shares_of(FP.encode(y), 4, i)

        def prog(p: Party) -> Protocol[np.ndarray]:
            z = yield from mul_fixed(p, xs, ys, FP.frac_bits)
            return (yield from open_all(p, z))

        return prog

    return for_member


async def run_three(links: dict[int, dict[int, QueueLink]], n: int = 100, timeout: float = 2.0) -> list[object]:
    make = program(n)
    tasks = [run_session(i, links[i], SID, make(i), timeout) for i in range(3)]
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_three_parties_over_links() -> None:
    out = asyncio.run(run_three(wire()))
    x, y = plain_inputs(3, 100)
    for r in out:
        assert isinstance(r, np.ndarray)
        assert np.max(np.abs(FP.decode(r) - x * y)) < 1e-3


def _tamper_second_data_frame(change: Callable[[Frame], Frame]) -> Callable[[bytes], bytes]:
    from site_agent.net.framing import decode

    def tamper(data: bytes) -> bytes:
        f = decode(data)
        if f.type != MsgType.MPC_DATA:
            return data
        assert f.array is not None
        return encode(change(Frame(f.type, f.session, f.sender, f.seq, array=np.array(f.array))))

    return tamper


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: Frame(f.type, b"X" * 16, f.sender, f.seq, array=f.array), "arrived on session"),
        (lambda f: Frame(f.type, f.session, 0, f.seq, array=f.array), "claims sender 0"),
        (lambda f: Frame(f.type, f.session, f.sender, f.seq + 5, array=f.array), "out of order"),
        (lambda f: Frame(f.type, f.session, f.sender, f.seq, array=f.array.astype(np.float64)), "1-D uint64"),
        (lambda f: Frame(MsgType.RESULT_SHARES, f.session, f.sender, f.seq, array=f.array), "unexpected RESULT_SHARES"),
    ],
)
def test_bad_frames_from_a_peer_fail_the_session_naming_it(change: Callable[[Frame], Frame], message: str) -> None:
    links = wire()
    links[1][2].tamper = _tamper_second_data_frame(change)  # what party 1 sends to party 2
    out = asyncio.run(run_three(links))
    assert isinstance(out[2], ProtocolViolation) and message in str(out[2]), out[2]
    # party 1 waits for party 2 and learns of the abort at once (no hang until its timeout)
    assert isinstance(out[1], PeerDisconnected) and "party 2 aborted" in str(out[1]), out[1]


def test_truncated_frame_is_a_protocol_violation() -> None:
    links = wire()
    links[1][2].tamper = lambda data: data[:-3] if len(data) > 200 else data
    out = asyncio.run(run_three(links))
    assert isinstance(out[2], ProtocolViolation) and "payload length" in str(out[2])


def test_silent_peer_times_out_naming_it() -> None:
    async def scenario() -> list[object]:
        links = wire()
        make = program(10)
        tasks = [run_session(i, links[i], SID, make(i), 0.5, {0: "a", 1: "b", 2: "c"}) for i in (0, 1)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = asyncio.run(scenario())  # party 2 never runs
    for r in out:
        assert isinstance(r, PeerDisconnected | PeerTimeout), r
    assert any(isinstance(r, PeerTimeout) and r.peer == 2 and "party 2 (c)" in str(r) for r in out), out


def test_run_party_needs_links_for_its_peers() -> None:
    async def scenario() -> None:
        m = PartyMachine(0, program(5)(0)(Party(0, Randomness.from_seed(0, 1))))
        await run_party(m, {}, SID, 1.0)

    with pytest.raises(ProtocolError) as err:
        asyncio.run(scenario())
    assert str(err.value) == "party 0: protocol sends to party 2 with no link"
    assert type(err.value) is ProtocolError  # not a peer's failure: this member's own missing link


def test_session_keys_are_bound_to_session_and_index() -> None:
    seed = bytes(range(16))
    keys = {derive_key(seed, s, j) for s in (b"a" * 16, b"b" * 16) for j in range(3)}
    assert len(keys) == 6 and all(len(k) == 16 for k in keys)
