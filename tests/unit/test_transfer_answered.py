"""Answered requests: acks name the requests a batch answered; lost is told from queued.

A CPU-starved device lags the shared stream by seconds: its stall timer fired while the
chunk it asked for was still queued ahead of it, and the server (past its resend guard)
sent the chunk again to every device. With acks that name answered requests, such a
device keeps waiting while its request's answer is unread, and a chunk that really was
lost is asked again as soon as the answer has been read without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.update.transfer.bitmap import ChunkBitmap
from agent.update.transfer.planner import PlannerLimits, WindowPlanner
from agent.update.transfer.wire import (
    MAX_ANSWERED,
    ChunkRequest,
    FrameError,
    FrameKind,
    answerable,
    decode_answered,
    decode_frame,
    decode_request,
    encode_answered,
    encode_frame,
)
from tests.support.transfer_session import CHUNK, faked_index_session

LIMITS = PlannerLimits(
    window=4, stall_s=5.0, busy_s=1.0, min_batch=1, max_deferrals=2, answer_grace_s=0.3
)


def _planner(size: int = 20) -> WindowPlanner:
    return WindowPlanner(ChunkBitmap(size), LIMITS, started_s=0.0, jitter=lambda: 0.5)


def test_request_seq_and_ack_names_round_trip() -> None:
    request = ChunkRequest(chunks=((0, 1),), listener=7, seq=3)
    assert decode_request(request.encode()) == request
    assert answerable(request) == (7, 3)
    assert answerable(ChunkRequest(chunks=((0, 1),), listener=7)) is None  # an older device
    assert answerable(ChunkRequest(listener=1 << 32, seq=0)) is None  # does not fit the ack
    pairs = [(7, 3), (9, 0), (0xFFFFFFFF, 5)]
    ack = decode_frame(encode_frame(FrameKind.ACK, 0, 2, encode_answered(pairs)))
    assert decode_answered(ack.payload) == pairs
    assert decode_answered(b"") == []  # an older server's ack
    with pytest.raises(FrameError):
        decode_answered(b"\x00" * 7)
    with pytest.raises(FrameError):
        decode_answered(encode_answered([(1, 1)] * (MAX_ANSWERED + 1)))


def test_requests_are_numbered() -> None:
    planner = _planner()
    first = planner.plan(0.0)
    assert (first.request, first.seq) == ([0, 1, 2, 3], 0)
    assert planner.plan(0.1).request == []  # window full: no request, no number used
    planner.arrived(0, 0.2, fresh=True)
    planner.bitmap.add(0)
    assert (planner.plan(0.2).request, planner.next_seq) == ([4], 2)


def test_an_answered_chunk_that_did_not_come_is_asked_again_after_the_grace() -> None:
    planner = _planner()
    planner.plan(0.0)  # request 0: chunks 0-3
    for index in (0, 1):
        planner.bitmap.add(index)
        planner.arrived(index, 0.5, fresh=True)
    planner.plan(0.5)  # request 1: chunks 4, 5
    planner.answered(0, 1.0)  # the answer to request 0 was read; 2 and 3 came not before it
    assert planner.next_due_s() == pytest.approx(1.3)
    planner.saw_frame(1.2)  # a busy stream does not delay a known loss
    assert planner.plan(1.2).request == []  # within the grace
    again = planner.plan(1.3)
    assert again.request == [2, 3]  # not 4, 5: their request is unanswered
    assert planner.lost == 2
    assert planner.stalls == 1


def test_an_answered_later_request_means_an_earlier_one_was_lost() -> None:
    planner = _planner()
    planner.plan(0.0)  # request 0 (never reached the server)
    planner.bitmap.add(0)
    planner.arrived(0, 0.1, fresh=True)
    planner.plan(0.1)  # request 1: chunk 4
    planner.answered(1, 0.2)
    assert sorted(planner.answered_s) == [1, 2, 3, 4]


def test_unanswered_requests_wait_while_the_stream_is_busy() -> None:
    """A device behind the stream: its stall timer fires, the answer is still unread.

    Against an older server (no names) the stall is re-asked after ``max_deferrals`` (2);
    once the server is known to name answers, it waits ``max_deferrals_unanswered``.
    """

    def rounds_until_asked_again(planner: WindowPlanner) -> int:
        planner.plan(0.0)
        now, rounds = 0.0, 0
        while rounds < 20:
            now = planner.next_due_s()
            planner.saw_frame(now - 0.1)  # frames keep coming: this device reads its backlog
            if planner.plan(now).request:
                return rounds
            rounds += 1
        return rounds

    older_server = _planner()
    assert rounds_until_asked_again(older_server) == 2
    naming_server = _planner()
    naming_server.attributing = True  # an earlier ack named one of this device's requests
    assert rounds_until_asked_again(naming_server) == LIMITS.max_deferrals_unanswered
    assert naming_server.lost == 0


def test_session_takes_its_own_names_from_acks_and_numbers_on_after_the_index(
    tmp_path: Path,
) -> None:
    chunk = CHUNK
    limits = PlannerLimits(window=2, stall_s=5.0, min_batch=1, answer_grace_s=0.3)
    faked = faked_index_session(tmp_path / "t", chunks=5, limits=limits, listener=42)
    session, index = faked.session, faked.index
    first = session.tick(0.0).request
    assert first is not None
    assert (first.indexes, first.seq, first.listener) == ((0, 1), 0, 42)
    for piece in (0, 1):
        body = index[piece * chunk : (piece + 1) * chunk]
        session.on_frame(decode_frame(encode_frame(FrameKind.INDEX, 0, piece, body)), 0.1)
    chunks = session.tick(0.2).request
    assert chunks is not None
    assert (chunks.chunks, chunks.seq) == (((0, 0), (0, 1)), 1)  # numbering went on

    def ack(pairs: list[tuple[int, int]]) -> None:
        frame = decode_frame(encode_frame(FrameKind.ACK, 0, 2, encode_answered(pairs)))
        session.on_frame(frame, 1.0)

    ack([(41, 1), (43, 1)])  # other devices' requests
    assert session.tick(1.0).request is None
    ack([(41, 1), (42, 0)])  # the index request, answered late: names no chunk request
    assert session.tick(1.0).request is None
    assert not session.wants_tick  # window full, nothing named: the driver sleeps on
    ack([(42, 1)])
    assert session.wants_tick  # woken to sleep until the grace ends, not a stall
    assert session.next_due_s() == pytest.approx(1.3)
    assert session.tick(1.2).request is None  # within the grace
    assert not session.wants_tick
    again = session.tick(1.3).request
    assert again is not None
    assert (again.chunks, again.seq) == (((0, 0), (0, 1)), 2)
    assert session.acks == 3


def test_re_asks_are_flagged_again() -> None:
    planner = _planner()
    assert planner.plan(0.0).again == []
    planner.answered(0, 1.0)
    again = planner.plan(1.3)
    assert (again.request, again.again) == ([0, 1, 2, 3], [0, 1, 2, 3])
    request = ChunkRequest(chunks=((0, 2), (0, 3)), listener=7, seq=1, again=((0, 3),))
    assert decode_request(request.encode()) == request
    with pytest.raises(FrameError):  # more re-asks than chunks
        decode_request(b'{"chunks": [[0, 1]], "r": [[0, 1], [0, 2]], "s": 1, "q": 1}')
