"""Linkage key batches larger than one frame: split at the site, reassembled at the member within
bounds (a total size limit, sequence numbers in order, sizes as declared), no state left behind."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from site_agent.agent.linkage import Reassembly, batch_frames, points_per_frame
from site_agent.errors import ProtocolViolation
from site_agent.linkage import oprf
from site_agent.net.framing import Frame, MsgType, decode, encode

SESSION = bytes(range(16))
MAX_FRAME = 48 + 8 + 3 * oprf.POINT_BYTES  # three points per frame


class Conn:
    """Stands for a connection (a weak key, as the mesh's connections are)."""


def message(points: int) -> bytes:
    return oprf.blind([str(i).encode() for i in range(points)]).message


def test_a_batch_over_the_frame_limit_is_split_and_reassembled_whole() -> None:
    data = message(10)
    frames = batch_frames(data, SESSION, 255, MAX_FRAME)
    assert points_per_frame(MAX_FRAME) == 3
    assert [f.seq for f in frames] == [0, 1, 2, 3, 4]
    assert frames[0].array is not None and frames[0].array.tolist() == [10, 4]
    wire = [decode(encode(f, MAX_FRAME), MAX_FRAME) for f in frames]  # each fits the limit
    batches, conn = Reassembly(), Conn()
    got = [batches.take(conn, f) for f in wire]
    assert got[:-1] == [None] * 4
    whole = got[-1]
    assert whole is not None and b"".join(whole.chunks) == data and whole.points == 10
    assert batches.pending(conn) is None


def test_one_frame_batches_still_have_their_header() -> None:
    frames = batch_frames(message(2), SESSION, 0)
    assert len(frames) == 2 and frames[0].array is not None and frames[0].array.tolist() == [2, 1]


def frame(seq: int, words: list[int] | np.ndarray, session: bytes = SESSION) -> Frame:
    return Frame(MsgType.LINKAGE, session=session, seq=seq, array=np.asarray(words, dtype=np.uint64))


POINT = [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("frames", "words"),
    [
        ([frame(1, POINT)], "outside a batch"),
        ([frame(0, [3, 1, 5])], "begins with its size"),
        ([frame(0, [0, 1])], "1 to 8 points"),
        ([frame(0, [9, 1])], "1 to 8 points"),  # over the total size limit
        ([frame(0, [2, 3])], "1 to 2 frames"),
        ([frame(0, [2, 2]), frame(0, [2, 2])], "before the last one was complete"),
        ([frame(0, [2, 2]), frame(2, POINT)], "frame 2 arrived where frame 1 was due"),
        ([frame(0, [2, 2]), frame(1, POINT), frame(1, POINT)], "frame 1 arrived where frame 2 was due"),
        ([frame(0, [2, 2]), frame(1, POINT, bytes(16))], "outside a batch"),
        ([frame(0, [2, 2]), frame(1, POINT * 3)], "more linkage points than the 2 declared"),
        ([frame(0, [3, 2]), frame(1, POINT), frame(2, POINT)], "2 linkage points arrived, 3 declared"),
        ([frame(0, [2, 2]), frame(1, [1, 2, 3])], "whole points"),
        ([frame(0, [2, 2]), frame(1, [])], "whole points"),
    ],
)
def test_malformed_batches_are_refused_and_leave_no_state(frames: list[Frame], words: str) -> None:
    batches, conn = Reassembly(max_points=8), Conn()
    with pytest.raises(ProtocolViolation, match=words):
        for f in frames:
            batches.take(conn, f)
    assert batches.pending(conn) is None
    # the connection can start a fresh batch right away
    assert batches.take(conn, frame(0, [1, 1])) is None
    whole = batches.take(conn, frame(1, POINT))
    assert whole is not None and whole.points == 1


def test_a_connection_closed_mid_batch_leaves_nothing_behind() -> None:
    batches, conn = Reassembly(), Conn()
    batches.take(conn, frame(0, [2, 2]))
    batches.take(conn, frame(1, POINT))
    assert batches.pending(conn) is not None
    del conn
    gc.collect()
    assert len(batches._open) == 0


def test_batches_of_two_connections_do_not_mix() -> None:
    batches, a, b = Reassembly(), Conn(), Conn()
    batches.take(a, frame(0, [2, 2]))
    batches.take(b, frame(0, [1, 1], bytes(16)))
    assert batches.take(a, frame(1, POINT)) is None
    done_b = batches.take(b, frame(1, [9, 9, 9, 9], bytes(16)))
    done_a = batches.take(a, frame(2, [5, 6, 7, 8]))
    assert done_b is not None and done_b.chunks == [np.array([9] * 4, dtype=np.uint64).tobytes()]
    assert done_a is not None and done_a.points == 2


def test_a_site_cannot_send_more_than_the_batch_limit_in_one_batch() -> None:
    with pytest.raises(ValueError, match="1 to"):
        batch_frames(b"", SESSION, 255)


def test_points_under_way_over_every_connection_are_bounded() -> None:
    batches, a, b, c = Reassembly(max_points=8, max_pending=12), Conn(), Conn(), Conn()
    batches.take(a, frame(0, [8, 1]))
    with pytest.raises(ProtocolViolation, match="too many linkage points under way"):
        batches.take(b, frame(0, [5, 1]))
    assert batches.take(c, frame(0, [4, 1])) is None  # up to the bound
    assert batches.take(a, frame(1, POINT * 8)) is not None  # a's batch done: its points no longer count
    assert batches.take(b, frame(0, [5, 1])) is None
