"""Binary wire frames: a fixed typed header plus raw little-endian array bytes, or small JSON.

Every websocket message between agents is one frame. Arrays travel as their raw bytes
(no pickle, no base64) so a million ring elements cost 8 MB plus 48 bytes, and decoding is
``np.frombuffer`` on the received buffer (no copy). Control messages (hello, errors, key
set-up, and the request types the daemon adds) are small JSON objects with a strict,
registered schema and a size cap.

Layout (all integers little-endian)::

    offset size field
    0      4    magic b"MPCJ"
    4      1    version (1)
    5      1    message type (:class:`MsgType`)
    6      1    dtype code (:class:`DType`; 0 = JSON payload)
    7      1    ndim (0..4; 0 for JSON payloads)
    8      1    sender index (0..2 committee members, 255 = not a committee member)
    9      7    reserved, must be zero
    16     16   session id
    32     8    sequence number
    40     8    payload length in bytes
    48     8*ndim  dims
    48+8*ndim  payload

The header length is a multiple of 8, so array payloads stay 8-byte aligned in the
received buffer. Decoding is strict: every failure is a :class:`ProtocolViolation` with
a message saying what was wrong, and nothing else escapes (see ``tests/net``).
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ProtocolViolation

MAGIC = b"MPCJ"
VERSION = 1
SESSION_BYTES = 16
NO_SESSION = bytes(SESSION_BYTES)
OUTSIDER = 255
"""Sender index of anyone who is not a committee member (analysts, input-only sites)."""
MAX_NDIM = 4
DEFAULT_MAX_FRAME = 64 * 2**20
DEFAULT_MAX_CONTROL = 64 * 2**10

_HEAD = struct.Struct("<4sBBBBB7s16sQQ")
HEADER_BYTES = _HEAD.size  # 48
assert HEADER_BYTES == 48


class MsgType(enum.IntEnum):
    """What a frame carries. Array types carry a typed array, the others a JSON object."""

    HELLO = 1
    ERROR = 2
    CONTROL = 3
    SESSION_KEY = 4
    SESSION_STATUS = 5
    MPC_DATA = 16
    INPUT_SHARES = 17
    RESULT_SHARES = 18
    LINKAGE = 19
    """A site's blinded linkage points to a member, and the member's answer (site_agent.linkage)."""
    QUERY = 32
    PLAN_DIGEST = 33
    STATUS = 34


ARRAY_TYPES = frozenset({MsgType.MPC_DATA, MsgType.INPUT_SHARES, MsgType.RESULT_SHARES, MsgType.LINKAGE})
"""Message types whose payload is an array; every other type carries JSON."""


class DType(enum.IntEnum):
    """Allowed payload dtypes (always little-endian on the wire)."""

    JSON = 0
    UINT64 = 1
    INT64 = 2
    FLOAT64 = 3
    UINT8 = 4


_NP_DTYPES: dict[DType, np.dtype[Any]] = {
    DType.UINT64: np.dtype("<u8"),
    DType.INT64: np.dtype("<i8"),
    DType.FLOAT64: np.dtype("<f8"),
    DType.UINT8: np.dtype("u1"),
}
_CODES = {dt: code for code, dt in _NP_DTYPES.items()}


# --- control-message schemas ---------------------------------------------------------

_SCHEMAS: dict[str, dict[str, type | tuple[type, ...]]] = {}


def register_control(kind: str, fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """Declare a JSON control message ``kind`` and its exact fields and their types.

    Decoding rejects unknown kinds, missing or extra fields, and wrongly typed values, so
    handlers receive only well-formed messages. Re-registering the same schema is a no-op;
    a conflicting one is a ``ValueError``.
    """
    spec = dict(fields)
    if "kind" in spec:
        raise ValueError("'kind' is implicit in every control message")
    old = _SCHEMAS.get(kind)
    if old is not None and old != spec:
        raise ValueError(f"control message kind {kind!r} is already registered with other fields")
    _SCHEMAS[kind] = spec


register_control("hello", {"index": int, "name": str})
register_control("error", {"message": str})
register_control("session_key", {"key_index": int, "seed": str})
register_control("waiting", {"waiting_for": int})


def validate_control(body: Any) -> dict[str, Any]:
    """Check a control message against its registered schema; return it."""
    if not isinstance(body, dict):
        raise ProtocolViolation("control payload is not a JSON object")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in _SCHEMAS:
        raise ProtocolViolation(f"unknown control message kind {kind!r}")
    spec = _SCHEMAS[kind]
    extra = set(body) - set(spec) - {"kind"}
    missing = set(spec) - set(body)
    if extra or missing:
        raise ProtocolViolation(
            f"control message {kind!r}: missing fields {sorted(missing)}, unexpected fields {sorted(extra)}"
        )
    for name, typ in spec.items():
        value = body[name]
        # bool is an int subclass; never accept it where a number is declared
        if not isinstance(value, typ) or (isinstance(value, bool) and bool not in _as_tuple(typ)):
            raise ProtocolViolation(f"control message {kind!r}: field {name!r} has the wrong type")
    return body


def _as_tuple(typ: type | tuple[type, ...]) -> tuple[type, ...]:
    return typ if isinstance(typ, tuple) else (typ,)


def _reject_constant(name: str) -> Any:
    raise ProtocolViolation(f"control payload contains non-standard JSON constant {name}")


# --- frames ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One decoded (or to-be-encoded) message.

    Exactly one of ``array`` (array types) and ``control`` (JSON types) is set. A decoded
    array is a read-only view into the received buffer.
    """

    type: MsgType
    session: bytes = NO_SESSION
    sender: int = OUTSIDER
    seq: int = 0
    array: npt.NDArray[Any] | None = None
    control: dict[str, Any] | None = field(default=None)

    @property
    def kind(self) -> str | None:
        """The control message kind, or None for array frames."""
        return None if self.control is None else str(self.control["kind"])


def encode_parts(frame: Frame, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[bytes, memoryview]:
    """Header bytes and a zero-copy view of the payload (send them back to back).

    Raises ``ValueError`` when the frame itself is invalid (a bug on the sending side).
    """
    ftype = MsgType(frame.type)
    if len(frame.session) != SESSION_BYTES:
        raise ValueError("session ids are 16 bytes")
    if not (0 <= frame.sender <= 2 or frame.sender == OUTSIDER):
        raise ValueError(f"invalid sender index {frame.sender}")
    if not 0 <= frame.seq < 2**64:
        raise ValueError("sequence number out of range")
    if ftype in ARRAY_TYPES:
        if frame.array is None or frame.control is not None:
            raise ValueError(f"{ftype.name} frames carry an array")
        arr = frame.array
        code = _CODES.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
        if code is None:
            raise ValueError(f"dtype {arr.dtype} is not allowed on the wire")
        if arr.ndim > MAX_NDIM:
            raise ValueError(f"arrays of more than {MAX_NDIM} dimensions are not allowed")
        dims = arr.shape
        arr = np.ascontiguousarray(arr, dtype=_NP_DTYPES[code])  # no copy when already so
        payload = memoryview(arr.data).cast("B") if arr.size else memoryview(b"")
    else:
        if frame.control is None or frame.array is not None:
            raise ValueError(f"{ftype.name} frames carry a JSON control message")
        validate_control(frame.control)
        code, dims = DType.JSON, ()
        payload = memoryview(json.dumps(frame.control, separators=(",", ":"), allow_nan=False).encode())
    if HEADER_BYTES + 8 * len(dims) + payload.nbytes > max_frame:
        raise ValueError(f"frame of {payload.nbytes} payload bytes exceeds the {max_frame}-byte limit")
    head = _HEAD.pack(
        MAGIC, VERSION, ftype, code, len(dims), frame.sender, bytes(7), frame.session, frame.seq, payload.nbytes
    )
    if dims:
        head += struct.pack(f"<{len(dims)}Q", *dims)
    return head, payload


def encode(frame: Frame, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """The whole frame as one bytes object (one copy of the payload)."""
    head, payload = encode_parts(frame, max_frame)
    return head + payload.tobytes() if payload.nbytes else head


@dataclass(frozen=True)
class Header:
    """The validated fixed part of a frame (enough to route it)."""

    type: MsgType
    dtype: DType
    sender: int
    session: bytes
    seq: int
    dims: tuple[int, ...]
    payload_bytes: int

    @property
    def length(self) -> int:
        return HEADER_BYTES + 8 * len(self.dims)


def decode_header(data: bytes | bytearray | memoryview, max_frame: int = DEFAULT_MAX_FRAME) -> Header:
    """Parse and check the header; the total length must match exactly."""
    total = len(data)
    if total > max_frame:
        raise ProtocolViolation(f"frame of {total} bytes exceeds the {max_frame}-byte limit")
    if total < HEADER_BYTES:
        raise ProtocolViolation(f"frame of {total} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, ftype, code, ndim, sender, reserved, session, seq, nbytes = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise ProtocolViolation("not an mpc-jupyter frame (bad magic)")
    if version != VERSION:
        raise ProtocolViolation(f"unsupported frame version {version} (this agent speaks {VERSION})")
    try:
        mtype = MsgType(ftype)
    except ValueError:
        raise ProtocolViolation(f"unknown message type {ftype}") from None
    try:
        dtype = DType(code)
    except ValueError:
        raise ProtocolViolation(f"dtype code {code} is not allowed") from None
    if reserved != bytes(7):
        raise ProtocolViolation("reserved header bytes are not zero")
    if not (sender <= 2 or sender == OUTSIDER):
        raise ProtocolViolation(f"invalid sender index {sender}")
    if ndim > MAX_NDIM:
        raise ProtocolViolation(f"ndim {ndim} exceeds the maximum of {MAX_NDIM}")
    head_len = HEADER_BYTES + 8 * ndim
    if total < head_len:
        raise ProtocolViolation(f"frame of {total} bytes is shorter than its {head_len}-byte header")
    dims = struct.unpack_from(f"<{ndim}Q", data, HEADER_BYTES) if ndim else ()
    if nbytes != total - head_len:
        raise ProtocolViolation(
            f"payload length field says {nbytes} bytes but the frame carries {total - head_len} (truncated or padded)"
        )
    if mtype in ARRAY_TYPES:
        if dtype == DType.JSON:
            raise ProtocolViolation(f"{mtype.name} frame without an array dtype")
        count = math.prod(dims)
        if count * _NP_DTYPES[dtype].itemsize != nbytes:
            raise ProtocolViolation(
                f"shape {tuple(dims)} of {dtype.name.lower()} needs {count * _NP_DTYPES[dtype].itemsize} bytes, "
                f"payload has {nbytes}"
            )
    else:
        if dtype != DType.JSON or ndim:
            raise ProtocolViolation(f"{mtype.name} frames carry JSON, not an array")
    return Header(mtype, dtype, sender, bytes(session), seq, tuple(dims), nbytes)


def decode(
    data: bytes | bytearray | memoryview,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_control: int = DEFAULT_MAX_CONTROL,
) -> Frame:
    """Parse one frame strictly. Arrays are zero-copy read-only views into ``data``."""
    head = decode_header(data, max_frame)
    array: npt.NDArray[Any] | None = None
    control: dict[str, Any] | None = None
    if head.type in ARRAY_TYPES:
        array = np.frombuffer(data, dtype=_NP_DTYPES[head.dtype], count=math.prod(head.dims), offset=head.length)
        array = array.reshape(head.dims)
        if array.flags.writeable:
            array.flags.writeable = False
    else:
        if head.payload_bytes > max_control:
            raise ProtocolViolation(f"control payload of {head.payload_bytes} bytes exceeds {max_control}")
        raw = bytes(memoryview(data)[head.length :])
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except ProtocolViolation:
            raise
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ProtocolViolation(f"control payload is not valid JSON: {type(exc).__name__}") from None
        control = validate_control(body)
    return Frame(head.type, head.session, head.sender, head.seq, array, control)


def error_frame(message: str, session: bytes = NO_SESSION, sender: int = OUTSIDER) -> Frame:
    """An ERROR control frame (message trimmed to fit the control size cap)."""
    return Frame(MsgType.ERROR, session, sender, 0, control={"kind": "error", "message": message[:4000]})
