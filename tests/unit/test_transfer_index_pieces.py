"""Index pieces that cannot belong to this index are rejected (and counted as corrupt)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from agent.update.transfer.parts import WriteResult
from agent.update.transfer.planner import PlannerLimits
from agent.update.transfer.session import IndexRef, TransferSession
from agent.update.transfer.table import table_from_bytes
from agent.update.transfer.wire import FrameKind, decode_frame, encode_frame


def test_wrong_length_or_out_of_range_index_pieces_are_rejected_and_the_index_completes(
    tmp_path: Path,
) -> None:
    chunk = 64
    data = os.urandom(3 * chunk)
    table = table_from_bytes(chunk, [("m.bin", len(data), hashlib.sha256(data).hexdigest())], data)
    index = os.urandom(100)  # two pieces: 64 and 36 bytes (parse_index is faked)
    session = TransferSession(
        directory=tmp_path / "t",
        index_ref=IndexRef(len(index), hashlib.sha256(index).hexdigest(), chunk),
        parse_index=lambda _b: table,
        limits=PlannerLimits(window=2, stall_s=5.0, min_batch=1),
        now_s=0.0,
    )

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
