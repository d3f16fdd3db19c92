"""Pure transfer pieces: bitmap, window planner, wire frames, chunk table, part files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import DownloadError, Reason
from agent.update.transfer.bitmap import ChunkBitmap, load_bitmap, save_bitmap
from agent.update.transfer.parts import PartFiles, WriteResult
from agent.update.transfer.planner import PlannerLimits, Verdict, WindowPlanner
from agent.update.transfer.session import IndexRef, TransferSession
from agent.update.transfer.table import ChunkTable, table_from_bytes
from agent.update.transfer.wire import (
    HEADER_BYTES,
    ChunkRequest,
    FrameError,
    FrameKind,
    decode_frame,
    decode_request,
    encode_frame,
)

CHUNK = 1024


def _table(data: bytes, chunk: int = CHUNK) -> ChunkTable:
    return table_from_bytes(chunk, [("m.bin", len(data), hashlib.sha256(data).hexdigest())], data)


@given(st.integers(0, 300), st.lists(st.integers(0, 299)))
def test_bitmap_roundtrip_and_counts(size: int, indices: list[int]) -> None:
    bitmap = ChunkBitmap(size)
    expected = set()
    for index in indices:
        if index < size:
            assert bitmap.add(index) == (index not in expected)
            expected.add(index)
    assert bitmap.count == len(expected)
    assert bitmap.missing() == sorted(set(range(size)) - expected)
    again = ChunkBitmap.from_bytes(bitmap.to_bytes())
    assert again.count == bitmap.count
    assert again.missing() == bitmap.missing()
    assert again.complete == (len(expected) == size)


def test_bitmap_rejects_garbage_and_other_sizes(tmp_path: Path) -> None:
    path = tmp_path / "bm"
    bitmap = ChunkBitmap(20)
    bitmap.add(3)
    save_bitmap(path, bitmap)
    assert load_bitmap(path, 20).missing(limit=4) == [0, 1, 2, 4]
    assert load_bitmap(path, 21).count == 0  # another transfer's shape: start over
    path.write_bytes(b"junk")
    assert load_bitmap(path, 20).count == 0
    with pytest.raises(ValueError):
        ChunkBitmap(3, b"\xff")  # bits beyond the size


def test_planner_window_stall_and_deadline() -> None:
    bitmap = ChunkBitmap(100)
    limits = PlannerLimits(window=8, stall_s=2.0, deadline_s=60.0, min_batch=4)
    planner = WindowPlanner(bitmap, limits, started_s=0.0)
    first = planner.plan(0.0)
    assert first.request == list(range(8))
    assert planner.plan(0.1).request == []  # window full
    for index in range(3):
        bitmap.add(index)
        planner.arrived(index, 0.2, fresh=True)
    assert planner.plan(0.3).request == []  # 3 free slots < min_batch
    assert not planner.wants_plan  # the driver need not wake for these arrivals
    bitmap.add(3)
    planner.arrived(3, 0.3, fresh=True)
    assert planner.wants_plan
    assert planner.plan(0.4).request == [8, 9, 10, 11]
    # Nothing more arrives: after stall_s the lost ones are asked again.
    stalled = planner.plan(2.5)
    assert stalled.stalled
    assert stalled.request == [4, 5, 6, 7, 8, 9, 10, 11]
    assert planner.stalls == 1
    assert planner.empty_stalls == 0  # chunks did arrive in this run
    assert planner.plan(61.0).verdict is Verdict.DEADLINE
    for index in range(100):
        bitmap.add(index)
    assert planner.plan(61.0).verdict is Verdict.COMPLETE


def test_planner_counts_empty_stalls_and_skips_chunks_from_others() -> None:
    bitmap = ChunkBitmap(10)
    planner = WindowPlanner(bitmap, PlannerLimits(window=4, stall_s=1.0), started_s=0.0)
    assert planner.plan(0.0).request == [0, 1, 2, 3]
    planner.plan(1.5)
    planner.plan(3.0)
    assert planner.empty_stalls == 2
    bitmap.add(0)  # arrived because another device asked for it: not in flight any more
    bitmap.add(1)
    assert planner.plan(3.1).request == []
    assert set(planner.in_flight) == {2, 3}


def test_frame_roundtrip_and_rejects() -> None:
    payload = os.urandom(300)
    frame = decode_frame(encode_frame(FrameKind.CHUNK, 2, 7, payload))
    assert (frame.kind, frame.file, frame.index, frame.payload) == (FrameKind.CHUNK, 2, 7, payload)
    assert frame.header_ok
    raw = bytearray(encode_frame(FrameKind.CHUNK, 0, 1, payload))
    raw[HEADER_BYTES] ^= 1
    assert not decode_frame(bytes(raw)).header_ok
    with pytest.raises(FrameError):
        decode_frame(b"EAC1")
    with pytest.raises(FrameError):
        decode_frame(bytes(raw[:-1]))  # length disagrees
    with pytest.raises(FrameError):
        decode_frame(b"XXXX" + bytes(raw[4:]))


def test_request_roundtrip_and_validation() -> None:
    request = ChunkRequest(chunks=((0, 1), (1, 0)), indexes=(0,))
    assert decode_request(request.encode()) == request
    for bad in (b"[]", b"{", b'{"chunks":[[1]]}', b'{"chunks":[[-1,2]]}', b'{"chunks":[[true,1]]}'):
        with pytest.raises(FrameError):
            decode_request(bad)
    with pytest.raises(FrameError):
        decode_request(ChunkRequest(chunks=tuple((0, i) for i in range(300))).encode())


def test_table_maps_global_indices_over_files() -> None:
    a, b = os.urandom(2500), os.urandom(1024)
    table = table_from_bytes(
        CHUNK,
        [
            ("a", len(a), hashlib.sha256(a).hexdigest()),
            ("b", len(b), hashlib.sha256(b).hexdigest()),
            ("empty", 0, hashlib.sha256(b"").hexdigest()),
        ],
        a + b,
    )
    assert table.total_chunks == 4
    assert [table.to_local(i) for i in range(4)] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert table.to_global(1, 0) == 3
    assert table.chunk_length(0, 2) == 452
    assert table.matches(0, 2, a[2048:])
    assert not table.matches(0, 2, a[2048:] + b"x")
    with pytest.raises(IndexError):
        table.to_global(0, 3)
    with pytest.raises(ValueError):
        ChunkTable(CHUNK, (table.files[0].__class__("x", 5000, "", table.files[0].chunks),))


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_parts_assemble_any_order_with_dups_and_corruption(tmp_path_factory, rnd) -> None:
    directory = tmp_path_factory.mktemp("parts")
    data = os.urandom(CHUNK * 9 + 77)
    table = _table(data)
    parts = PartFiles(directory / "t", table, persist_every=3)
    parts.open()
    order = list(range(table.total_chunks)) * 2
    rnd.shuffle(order)
    writes = 0
    for index in order:
        piece = data[index * CHUNK : (index + 1) * CHUNK]
        if rnd.random() < 0.2:
            bad = bytearray(piece)
            bad[0] ^= 0xFF
            assert parts.write(0, index, bytes(bad)) in (
                WriteResult.REJECTED,
                WriteResult.DUPLICATE,
            )
        result = parts.write(0, index, piece)
        writes += result is WriteResult.WRITTEN
    assert writes == table.total_chunks  # every chunk written exactly once
    assert parts.write(0, 99, b"x") is WriteResult.REJECTED
    (path,) = parts.finish()
    assert path.read_bytes() == data
    parts.discard()
    assert not (directory / "t").exists()


def test_parts_resume_from_bitmap_and_recover_unsaved_chunks(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 20)
    table = _table(data)
    parts = PartFiles(tmp_path / "t", table, persist_every=8)
    parts.open()
    for index in range(13):
        parts.write(0, index, data[index * CHUNK : (index + 1) * CHUNK])
    parts.close()  # "killed": chunks 8..12 written but not in the saved bitmap
    assert load_bitmap(tmp_path / "t" / "bitmap", 20).count == 8
    again = PartFiles(tmp_path / "t", table, persist_every=8)
    again.open()
    assert again.recovered == 5
    assert again.bitmap.missing() == list(range(13, 20))
    # A corrupted byte in an unsaved chunk is not trusted.
    again.close()
    with (tmp_path / "t" / "files" / "m.bin").open("r+b") as handle:
        handle.seek(14 * CHUNK)
        handle.write(data[13 * CHUNK : 14 * CHUNK])  # chunk 13's bytes at chunk 14: wrong
    third = PartFiles(tmp_path / "t", table)
    third.open()
    assert 14 not in third.bitmap


def test_parts_finish_needs_every_chunk_at_its_signed_length(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 3 + 7)
    table = _table(data)
    parts = PartFiles(tmp_path / "t", table)
    parts.open()
    for index in (0, 1, 3):
        parts.write(0, index, data[index * CHUNK : (index + 1) * CHUNK])
    with pytest.raises(DownloadError) as err:
        parts.finish()
    assert err.value.reason is Reason.LENGTH_MISMATCH
    assert "3 of 4 chunks" in str(err.value)
    parts.write(0, 2, data[2 * CHUNK : 3 * CHUNK])
    (path,) = parts.finish()
    assert path.read_bytes() == data
    # The whole-file hash is the store's pre-activation check (test_update_staging_link.py).


def test_planner_defers_stalls_with_jitter_while_the_stream_is_busy() -> None:
    bitmap = ChunkBitmap(10)
    rolls = iter([0.0, 1.0 - 1e-9, 0.5, 0.5])
    limits = PlannerLimits(window=2, stall_s=2.0, busy_s=1.0, max_deferrals=1, min_batch=1)
    planner = WindowPlanner(bitmap, limits, started_s=0.0, jitter=lambda: next(rolls))
    assert planner.plan(0.0).request == [0, 1]
    # Frames keep flowing (other devices' chunks): the stall is deferred, not re-asked.
    planner.saw_frame(1.9)
    busy = planner.plan(2.0)
    assert busy.request == []
    assert not busy.stalled
    assert planner.deferred == 2
    # Jittered: chunk 0 is due again after 0.5 stall periods, chunk 1 after ~1.5.
    planner.saw_frame(2.9)
    assert planner.plan(3.0).request == [0]  # deferred once already: asked again now
    assert planner.stalls == 1
    assert planner.plan(4.9).request == []  # chunk 1 is not due before 2.0 + 1.5 x 2 s
    assert planner.plan(5.0).request == [0, 1]  # the stream went quiet: no more deferral
    # A quiet stream: stalls are re-asked at once (the old behaviour).
    quiet = WindowPlanner(ChunkBitmap(4), limits, started_s=0.0)
    assert quiet.plan(0.0).request == [0, 1]
    assert quiet.plan(2.0).request == [0, 1]
    assert quiet.deferred == 0


def test_request_carries_the_listener_token() -> None:
    request = ChunkRequest(chunks=((0, 1),), listener=12345)
    assert decode_request(request.encode()) == request
    assert decode_request(b'{"chunks":[[0,1]]}').listener is None
    with pytest.raises(FrameError):
        decode_request(b'{"chunks":[],"s":-1}')


def test_resend_guard_serves_late_listeners_only() -> None:
    from agent.fleet.chunkserver import resend_not_needed

    # Sent at t=10 to everyone listening since t=5: not again within the 2 s guard...
    assert resend_not_needed(sent_s=10.0, listening_since_s=5.0, now_s=11.0, guard_s=2.0)
    # ...but after it (a real loss: the device's stall timer is longer than the guard).
    assert not resend_not_needed(sent_s=10.0, listening_since_s=5.0, now_s=12.5, guard_s=2.0)
    # A device that started listening after it went out cannot have it: send again now.
    assert not resend_not_needed(sent_s=10.0, listening_since_s=10.5, now_s=11.0, guard_s=2.0)


def test_parts_resume_in_any_order_finishes_with_the_exact_bytes(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 12 + 5)
    table = _table(data)
    parts = PartFiles(tmp_path / "t", table, persist_every=4)
    parts.open()
    for index in (1, 2, 0, 5, 4):
        parts.write(0, index, data[index * CHUNK : (index + 1) * CHUNK])
    parts.close()
    again = PartFiles(tmp_path / "t", table, persist_every=4)
    again.open()
    assert set(again.bitmap.missing()) == set(range(table.total_chunks)) - {0, 1, 2, 4, 5}
    for index in range(table.total_chunks - 1, -1, -1):  # duplicates of 0..5 are no-ops
        again.write(0, index, data[index * CHUNK : (index + 1) * CHUNK])
    assert again.duplicates == 5
    (path,) = again.finish()
    assert path.read_bytes() == data


def _ack_session(tmp_path: Path) -> tuple[TransferSession, bytes]:
    chunk = 64
    data = bytes(range(256)) * 2
    table = table_from_bytes(chunk, [("m.bin", len(data), hashlib.sha256(data).hexdigest())], data)
    index = b"index:" + hashlib.sha256(data).digest()
    tmp_path.mkdir()
    (tmp_path / "index").write_bytes(index)
    session = TransferSession(
        directory=tmp_path,
        index_ref=IndexRef(len(index), hashlib.sha256(index).hexdigest(), chunk),
        parse_index=lambda _b: table,
        limits=PlannerLimits(window=4, stall_s=1.0, busy_s=0.0),
        now_s=0.0,
        max_empty_stalls=3,
    )
    return session, data


def test_acks_of_batches_the_guard_emptied_never_read_as_a_size_limit(tmp_path: Path) -> None:
    session, _ = _ack_session(tmp_path / "held")
    for step in range(10):  # ten stall rounds, the server answering with empty batches
        session.tick(step * 2.0)
        session.on_frame(decode_frame(encode_frame(FrameKind.ACK, 0, 0, b"")), step * 2.0 + 0.1)
    assert session.acks == 0

    session, _ = _ack_session(tmp_path / "limit")
    sent_four = decode_frame(encode_frame(FrameKind.ACK, 0, 4, b""))

    def server_sends_but_nothing_arrives() -> None:
        for step in range(10):
            session.tick(step * 2.0)
            session.on_frame(sent_four, step * 2.0 + 0.1)

    with pytest.raises(DownloadError) as caught:
        server_sends_but_nothing_arrives()
    assert caught.value.reason is Reason.TOO_LARGE
