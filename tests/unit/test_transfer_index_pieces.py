"""Index pieces that cannot belong to this index are rejected (and counted as corrupt)."""

from __future__ import annotations

from pathlib import Path

from agent.update.transfer.parts import WriteResult
from agent.update.transfer.planner import PlannerLimits
from agent.update.transfer.wire import FrameKind, decode_frame, encode_frame
from tests.support.transfer_session import faked_index_session


def test_wrong_length_or_out_of_range_index_pieces_are_rejected_and_the_index_completes(
    tmp_path: Path,
) -> None:
    faked = faked_index_session(
        tmp_path / "t", chunks=3, limits=PlannerLimits(window=2, stall_s=5.0, min_batch=1)
    )
    session, index = faked.session, faked.index  # index: two pieces, 64 and 36 bytes

    def piece(number: int, body: bytes) -> WriteResult | None:
        frame = decode_frame(encode_frame(FrameKind.INDEX, 0, number, body))
        return session.on_frame(frame, 0.1)

    assert piece(1, index[64:90]) is WriteResult.REJECTED  # short: not this index's piece
    assert piece(0, index[:64] + b"x") is WriteResult.REJECTED  # long
    assert piece(2, index[:36]) is WriteResult.REJECTED  # past the index's end
    assert piece(0, index[:64]) is None
    assert piece(0, index[:64]) is None  # a duplicate is not damage
    assert session.parts is None
    assert piece(1, index[64:]) is None
    assert session.parts is not None  # the index joined and checked: chunks next
