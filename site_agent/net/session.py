"""Per-session PRF keys for the committee, and running one MPC session over links.

Replicated sharing needs three pairwise PRF keys per session: K_j is held by members
j - 1 and j (so member i holds K_i and K_{i+1}; see :mod:`site_agent.mpc.randomness`).

Key agreement (the simplest sound choice for the semi-honest, honest-majority model):
for each pair, the *lower-index* member draws 16 bytes with ``os.urandom`` and sends them
to the other in a ``session_key`` control frame over their mutually authenticated TLS 1.3
link. Both then derive ``K_j = HKDF-SHA256(ikm=seed, salt=session_id, info="mpc-jupyter
prf v1" || j || pair)``, truncated to 16 bytes. Why this is enough:

* confidentiality and authenticity of the seed come from the TLS link, which only the two
  certificate holders of the pair terminate; the third member never sees it;
* freshness: a new seed per session, and HKDF binds the key to the session id and the key
  index, so keys never repeat across sessions or roles even if a seed were reused;
* no extra round trip: the seed travels in front of the first protocol message, on the
  same ordered link, and the receiver reads it before running the protocol.

A Diffie-Hellman exchange would add forward secrecy beyond TLS's own (TLS 1.3 already
uses ephemeral ECDHE), so it buys nothing here.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import PeerDisconnected, PeerTimeout, ProtocolViolation
from ..mpc.party import Party, PartyMachine, Protocol
from ..mpc.randomness import KEY_BYTES, Randomness
from .framing import DEFAULT_MAX_FRAME, Frame, MsgType, decode, encode_parts
from .mpc_transport import Link, notify_abort, run_party, session_label

T = TypeVar("T")

SEED_BYTES = 16
_INFO = b"mpc-jupyter prf v1"


def derive_key(seed: bytes, session_id: bytes, key_index: int) -> bytes:
    """K_j from the pair's seed, bound to the session id and to j (and so to the pair)."""
    if len(seed) != SEED_BYTES:
        raise ProtocolViolation("session key seeds are 16 bytes")
    pair = ((key_index - 1) % 3, key_index)
    info = _INFO + bytes([key_index, min(pair), max(pair)])
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=session_id, info=info).derive(seed)


def key_holders(key_index: int) -> tuple[int, int]:
    """The two members that hold K_j, lower index first."""
    a, b = (key_index - 1) % 3, key_index
    return (min(a, b), max(a, b))


async def establish_keys(index: int, links: Mapping[int, Link], session_id: bytes, timeout: float) -> Randomness:
    """Agree on this member's two session keys with its peers; return its :class:`Randomness`.

    Must run on every member before the protocol, on the same links, in the same session.
    """
    held = (index, (index + 1) % 3)
    keys: dict[int, bytes] = {}
    to_receive: dict[int, int] = {}  # peer -> key index
    for j in held:
        low, high = key_holders(j)
        if index == low:
            seed = os.urandom(SEED_BYTES)
            keys[j] = derive_key(seed, session_id, j)
            frame = Frame(
                MsgType.SESSION_KEY,
                session_id,
                index,
                0,
                control={"kind": "session_key", "key_index": j, "seed": seed.hex()},
            )
            await asyncio.wait_for(links[high].send(encode_parts(frame)), timeout)
        else:
            to_receive[low] = j

    async def receive(peer: int, j: int) -> None:
        try:
            data = await asyncio.wait_for(links[peer].recv(), timeout)
        except TimeoutError:
            raise PeerTimeout(peer, f"party {index}: no session key from party {peer} within {timeout:g} s") from None
        frame = decode(data, DEFAULT_MAX_FRAME)
        if frame.session != session_id or frame.sender != peer:
            raise ProtocolViolation(
                f"party {index}: session key frame from party {peer} names session "
                f"{session_label(frame.session)} / sender {frame.sender}"
            )
        if frame.type == MsgType.ERROR:
            reason = frame.control["message"] if frame.control else "?"
            raise PeerDisconnected(peer, f"party {index}: party {peer} aborted the session: {reason}")
        if frame.type != MsgType.SESSION_KEY or frame.control is None or frame.control["key_index"] != j:
            raise ProtocolViolation(f"party {index}: expected the session key K_{j} from party {peer}")
        try:
            seed = bytes.fromhex(frame.control["seed"])
        except ValueError:
            raise ProtocolViolation(f"party {index}: session key seed from party {peer} is not hex") from None
        keys[j] = derive_key(seed, session_id, j)

    await asyncio.gather(*(receive(p, j) for p, j in to_receive.items()))
    return Randomness(index, keys)


async def run_session(
    index: int,
    links: Mapping[int, Link],
    session_id: bytes,
    program: Callable[[Party], Protocol[T]],
    timeout: float,
    names: Mapping[int, str] | None = None,
) -> T:
    """Set up session keys, then run ``program`` as member ``index`` to completion."""
    try:
        rand = await establish_keys(index, links, session_id, timeout)
    except Exception as exc:
        await notify_abort(links, session_id, index, f"party {index} aborted: {exc}")
        raise
    machine = PartyMachine(index, program(Party(index, rand)))
    return await run_party(machine, links, session_id, timeout, names=names)
