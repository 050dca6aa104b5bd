"""Hostile bytes at the frame parser: anything but a frame is a ProtocolViolation, frames round-trip.

A fixed hypothesis budget (``FUZZ``) keeps this file to a few seconds; the strategies aim at
the parser's branches: random bytes, valid frames with bytes flipped, cut or appended, and
headers with every field drawn from its full range.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from site_agent.errors import ProtocolViolation
from site_agent.net import framing
from site_agent.net.framing import ARRAY_TYPES, Frame, MsgType

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_LIMITS = {"max_frame": 1 << 16, "max_control": 1 << 12}

sessions = st.binary(min_size=16, max_size=16)
senders = st.sampled_from([0, 1, 2, framing.OUTSIDER])
seqs = st.integers(0, 2**64 - 1)
wire_dtypes = st.sampled_from([np.uint64, np.int64, np.float64, np.uint8])
array_frames = st.builds(
    Frame,
    type=st.sampled_from(sorted(ARRAY_TYPES)),
    session=sessions,
    sender=senders,
    seq=seqs,
    array=wire_dtypes.flatmap(lambda dt: arrays(dt, array_shapes(min_dims=0, max_dims=4, max_side=5))),
)
texts = st.text(max_size=40)
controls = st.one_of(
    st.builds(lambda i, n: {"kind": "hello", "index": i, "name": n}, st.integers(-5, 5), texts),
    st.builds(lambda m: {"kind": "error", "message": m}, texts),
    st.builds(lambda i, s: {"kind": "session_key", "key_index": i, "seed": s}, st.integers(0, 3), texts),
    st.builds(lambda w: {"kind": "waiting", "waiting_for": w}, st.integers(0, 2)),
)
control_frames = st.builds(
    Frame,
    type=st.sampled_from([t for t in MsgType if t not in ARRAY_TYPES and t != MsgType.HELLO]),
    session=sessions,
    sender=senders,
    seq=seqs,
    control=controls,
)
frames = st.one_of(array_frames, control_frames)


def decodes_or_violates(data: bytes) -> Frame | None:
    """Decode; the only error allowed is ProtocolViolation."""
    try:
        return framing.decode(data, **SMALL_LIMITS)
    except ProtocolViolation:
        return None


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_violations(data: bytes) -> None:
    decodes_or_violates(data)
    decodes_or_violates(framing.MAGIC + bytes([framing.VERSION]) + data)  # past the first checks


@FUZZ
@given(
    st.sampled_from([int(t) for t in MsgType] + [0, 255]),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(min_size=7, max_size=7),
    st.integers(0, 2**64 - 1),
    st.lists(st.integers(0, 2**64 - 1), max_size=6),
    st.binary(max_size=64),
)
def test_headers_with_any_field_values(mtype, dcode, ndim, sender, reserved, nbytes, dims, payload) -> None:  # type: ignore[no-untyped-def]
    head = struct.pack(
        "<4sBBBBB7s16sQQ", framing.MAGIC, framing.VERSION, mtype, dcode, ndim, sender, reserved, bytes(16), 0, nbytes
    )
    frame = decodes_or_violates(head + struct.pack(f"<{len(dims)}Q", *dims) + payload)
    if frame is not None:  # what decodes is consistent with its header
        assert frame.type == mtype and ndim <= framing.MAX_NDIM and reserved == bytes(7)


@FUZZ
@given(frames)
def test_valid_frames_round_trip(frame: Frame) -> None:
    back = framing.decode(framing.encode(frame))
    assert (back.type, back.session, back.sender, back.seq) == (frame.type, frame.session, frame.sender, frame.seq)
    if frame.array is not None:
        assert back.array is not None and not back.array.flags.writeable
        assert back.array.dtype == frame.array.dtype and back.array.shape == frame.array.shape
        assert back.array.tobytes() == frame.array.tobytes()  # bit for bit, NaNs included
    else:
        assert back.control == frame.control


@FUZZ
@given(frames, st.data())
def test_damaged_frames_raise_only_protocol_violations(frame: Frame, data: st.DataObject) -> None:
    wire = bytearray(framing.encode(frame))
    how = data.draw(st.sampled_from(["flip", "cut", "append"]))
    if how == "flip":
        for at in data.draw(st.lists(st.integers(0, len(wire) - 1), min_size=1, max_size=4)):
            wire[at] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del wire[data.draw(st.integers(0, len(wire) - 1)) :]
    else:
        wire += data.draw(st.binary(min_size=1, max_size=16))
    got = decodes_or_violates(bytes(wire))
    if how != "flip":
        assert got is None  # a frame's length is exact: cut or padded never decodes


def test_a_frame_over_the_limit_is_refused() -> None:
    big = Frame(MsgType.MPC_DATA, array=np.zeros(1 << 14, dtype=np.uint64))
    with pytest.raises(ProtocolViolation):
        framing.decode(framing.encode(big), **SMALL_LIMITS)
