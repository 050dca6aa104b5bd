"""Wire frames: round trips, and strict rejection of anything malformed (property tests)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from site_agent.errors import ProtocolViolation
from site_agent.net.framing import (
    Frame,
    MsgType,
    decode,
    encode,
    encode_parts,
    error_frame,
    register_control,
)

DTYPES = [np.uint64, np.int64, np.float64, np.uint8]
sessions = st.binary(min_size=16, max_size=16)
senders = st.sampled_from([0, 1, 2, 255])


@st.composite
def array_frames(draw: st.DrawFn) -> Frame:
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=4)))
    raw = draw(st.binary(min_size=int(np.prod(shape)) * np.dtype(dtype).itemsize, max_size=int(np.prod(shape)) * 8))
    arr = np.frombuffer(raw[: int(np.prod(shape)) * np.dtype(dtype).itemsize], dtype=dtype).reshape(shape)
    mtype = draw(st.sampled_from([MsgType.MPC_DATA, MsgType.INPUT_SHARES, MsgType.RESULT_SHARES]))
    return Frame(mtype, draw(sessions), draw(senders), draw(st.integers(0, 2**64 - 1)), array=arr)


@st.composite
def control_frames(draw: st.DrawFn) -> Frame:
    kind = draw(st.sampled_from(["hello", "error", "session_key"]))
    body: dict[str, object]
    if kind == "hello":
        body = {"kind": kind, "index": draw(st.integers(0, 2)), "name": draw(st.text(max_size=20))}
    elif kind == "error":
        body = {"kind": kind, "message": draw(st.text(max_size=50))}
    else:
        body = {
            "kind": kind,
            "key_index": draw(st.integers(0, 2)),
            "seed": draw(st.binary(min_size=16, max_size=16)).hex(),
        }
    mtype = {"hello": MsgType.HELLO, "error": MsgType.ERROR, "session_key": MsgType.SESSION_KEY}[kind]
    return Frame(mtype, draw(sessions), draw(senders), draw(st.integers(0, 2**64 - 1)), control=body)


frames = st.one_of(array_frames(), control_frames())


def same(a: Frame, b: Frame) -> bool:
    if (a.type, a.session, a.sender, a.seq, a.control) != (b.type, b.session, b.sender, b.seq, b.control):
        return False
    if a.array is None or b.array is None:
        return a.array is None and b.array is None
    return a.array.dtype == b.array.dtype and a.array.shape == b.array.shape and a.array.tobytes() == b.array.tobytes()


@given(frames)
def test_round_trip(frame: Frame) -> None:
    data = encode(frame)
    assert same(decode(data), frame)
    head, payload = encode_parts(frame)
    assert head + bytes(payload) == data
    assert len(head) % 8 == 0  # payload stays aligned


def test_decoded_array_is_a_zero_copy_read_only_view() -> None:
    arr = np.arange(1000, dtype=np.uint64)
    data = encode(Frame(MsgType.MPC_DATA, b"s" * 16, 0, 0, array=arr))
    out = decode(data).array
    assert out is not None and not out.flags.writeable and not out.flags.owndata
    np.testing.assert_array_equal(out, arr)


@given(frames, st.data())
def test_truncation_is_rejected(frame: Frame, data: st.DataObject) -> None:
    raw = encode(frame)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ProtocolViolation):
        decode(raw[:cut])


@given(frames, st.binary(min_size=1, max_size=9))
def test_trailing_bytes_are_rejected(frame: Frame, extra: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="payload length"):
        decode(encode(frame) + extra)


@given(frames, st.data())
def test_bit_flips_never_crash(frame: Frame, data: st.DataObject) -> None:
    """A flipped bit anywhere in the header (or a control payload) is rejected or decodes cleanly."""
    raw = bytearray(encode(frame))
    limit = len(raw) if frame.array is None else len(raw) - frame.array.nbytes
    pos = data.draw(st.integers(0, limit - 1))
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        out = decode(bytes(raw))
    except ProtocolViolation:
        return
    assert out.type in MsgType
    assert (out.array is None) != (out.control is None)


@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_are_refused_with_a_reason(raw: bytes, with_magic: bool) -> None:
    """Random bytes (also after a valid magic and version) never decode, and never escape as
    anything but a ProtocolViolation that says what is wrong."""
    with pytest.raises(ProtocolViolation) as err:
        decode(b"MPCJ\x01" + raw if with_magic else raw)
    assert str(err.value)


def _header(**kw: int | bytes) -> bytes:
    fields = {"magic": b"MPCJ", "version": 1, "type": 16, "dtype": 1, "ndim": 1, "sender": 0, "reserved": bytes(7)}
    fields.update({"session": b"s" * 16, "seq": 0, "nbytes": 8, "dims": 1})
    fields.update(kw)
    head = struct.pack(
        "<4sBBBBB7s16sQQ",
        fields["magic"],
        fields["version"],
        fields["type"],
        fields["dtype"],
        fields["ndim"],
        fields["sender"],
        fields["reserved"],
        fields["session"],
        fields["seq"],
        fields["nbytes"],
    )
    return head + struct.pack("<Q", fields["dims"]) * int(fields["ndim"])  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("fields", "payload", "message"),
    [
        ({"magic": b"HTTP"}, bytes(8), "bad magic"),
        ({"version": 2}, bytes(8), "version"),
        ({"type": 99}, bytes(8), "unknown message type"),
        ({"dtype": 9}, bytes(8), "dtype code 9"),
        ({"sender": 7}, bytes(8), "sender"),
        ({"reserved": b"\x01" + bytes(6)}, bytes(8), "reserved"),
        ({"ndim": 5, "nbytes": 8}, bytes(8), "ndim"),
        ({"dims": 2}, bytes(8), "shape"),
        ({"nbytes": 16}, bytes(8), "payload length"),
        ({"dtype": 0}, bytes(8), "without an array dtype"),
        ({"type": 1, "dtype": 1}, bytes(8), "carry JSON"),
    ],
)
def test_header_errors_are_clear(fields: dict[str, int | bytes], payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolViolation, match=message):
        decode(_header(**fields) + payload)


def test_size_limits() -> None:
    big = Frame(MsgType.MPC_DATA, b"s" * 16, 0, 0, array=np.zeros(1000, dtype=np.uint64))
    raw = encode(big)
    with pytest.raises(ProtocolViolation, match="exceeds"):
        decode(raw, max_frame=len(raw) - 1)
    with pytest.raises(ValueError, match="exceeds"):
        encode(big, max_frame=1000)
    ctl = error_frame("x" * 3000)
    with pytest.raises(ProtocolViolation, match="control payload"):
        decode(encode(ctl), max_control=100)


def test_disallowed_dtypes_are_not_encoded() -> None:
    refused = {
        "dtype float32 is not allowed on the wire": np.zeros(3, dtype=np.float32),
        "dtype object is not allowed on the wire": np.zeros(3, dtype=object),
        "arrays of more than 4 dimensions are not allowed": np.zeros((1, 1, 1, 1, 1), np.uint64),
    }
    for message, arr in refused.items():
        with pytest.raises(ValueError, match=f"^{message}$"):
            encode(Frame(MsgType.MPC_DATA, b"s" * 16, 0, 0, array=arr))


def _json_frame(payload: bytes) -> bytes:
    return _header(type=2, dtype=0, ndim=0, nbytes=len(payload)) + payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b'{"kind": "nope"}', "unknown control message kind"),
        (b'{"kind": "error"}', "missing fields"),
        (b'{"kind": "error", "message": "m", "x": 1}', "unexpected fields"),
        (b'{"kind": "error", "message": 5}', "wrong type"),
        (b'{"kind": "hello", "index": true, "name": "a"}', "wrong type"),
        (b'{"kind": "error", "message": NaN}', "non-standard JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 50000, "not valid JSON"),
        (b'{"kind": "error", "message": "m"} x', "not valid JSON"),
    ],
)
def test_control_schema_is_strict(payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolViolation, match=message):
        decode(_json_frame(payload))


def test_register_control_kind() -> None:
    register_control("plan_digest", {"digest": str, "site": str})
    register_control("plan_digest", {"digest": str, "site": str})  # idempotent
    with pytest.raises(
        ValueError, match=r"^control message kind 'plan_digest' is already registered with other fields$"
    ):
        register_control("plan_digest", {"digest": int})
    frame = Frame(MsgType.PLAN_DIGEST, b"q" * 16, 1, 0, control={"kind": "plan_digest", "digest": "ab", "site": "a"})
    assert decode(encode(frame)).control == frame.control
