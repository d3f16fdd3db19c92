"""The chunk server's sharing rules against a real Mosquitto: resend guard and resend hold."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.fleet.chunkserver import ChunkServer
from agent.fleet.keys import init_keys
from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import load_bundle
from agent.update.transfer.wire import (
    ChunkRequest,
    FrameKind,
    decode_answered,
    decode_frame,
    encode_frame,
)
from tests.integration.test_delivery import FLEET, TOPICS, make_bundle
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker


class Stream:
    """A chunk server on a real broker, the frames it streams, and a client to ask from."""

    def __init__(self, dep: str, server: ChunkServer, devices: FleetClient) -> None:
        self.dep = dep
        self.server = server
        self._devices = devices
        self._frames: list[tuple[FrameKind, int]] = []
        self._answered: list[tuple[int, int]] = []  # (listener, seq) named by acks, in order
        self._named_after: dict[tuple[int, int], list[tuple[FrameKind, int]]] = {}
        self._lock = threading.Lock()

    def on_frame(self, _topic: str, payload: bytes) -> None:
        frame = decode_frame(payload)
        with self._lock:
            self._frames.append((frame.kind, frame.index))
            if frame.kind is FrameKind.ACK:
                self._answered += decode_answered(frame.payload)
                for pair in decode_answered(frame.payload):
                    self._named_after.setdefault(pair, list(self._frames))

    def frames_before_name(self, pair: tuple[int, int]) -> list[tuple[FrameKind, int]]:
        """The stream's frames up to the ack that first named ``pair``."""
        with self._lock:
            return self._named_after.get(pair, [])

    def answered(self) -> list[tuple[int, int]]:
        with self._lock:
            return list(self._answered)

    def wait_answered(self, pair: tuple[int, int]) -> bool:
        deadline = time.monotonic() + 5
        while pair not in self.answered() and time.monotonic() < deadline:
            time.sleep(0.01)
        return pair in self.answered()

    def ask(self, device: str, request: ChunkRequest) -> None:
        self._devices.publish(TOPICS.request(device, self.dep), request.encode())

    def count(self, kind: FrameKind, index: int | None = None) -> int:
        with self._lock:
            return sum(1 for k, i in self._frames if k is kind and index in (None, i))

    def wait_for(self, kind: FrameKind, n: int, index: int | None = None) -> int:
        """Up to 5 s for ``n`` frames of ``kind`` (of chunk ``index``); how many came."""
        deadline = time.monotonic() + 5
        while self.count(kind, index) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.count(kind, index)


@contextlib.contextmanager
def streaming(
    mosquitto: MosquittoBroker, tmp_path: Path, model: Path, **server_options: Any
) -> Iterator[Stream]:
    """A signed bundle served by a started ``ChunkServer``; stopped and disconnected after."""
    init_keys(tmp_path / "keys")
    served = load_bundle(make_bundle(tmp_path / "keys", tmp_path / "b", model, 1))
    watcher = FleetClient(mosquitto.url).connect()
    server_client = FleetClient(mosquitto.url).connect()
    devices = FleetClient(mosquitto.url).connect()
    stop = threading.Event()
    server = ChunkServer(server_client, TOPICS, [served], stop, **server_options)
    stream = Stream(served.deployment_id, server, devices)
    watcher.subscribe(TOPICS.stream(FLEET, stream.dep), stream.on_frame)
    server.start()
    time.sleep(0.3)  # SUBACKs
    try:
        yield stream
    finally:
        stop.set()
        server.join()
        for client in (watcher, server_client, devices):
            client.close()


def test_guard_skips_listeners_that_saw_it_and_hold_shares_resends(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    with streaming(
        mosquitto, tmp_path, short_range_model, resend_guard_s=5.0, resend_hold_s=0.3
    ) as stream:

        def ask(device: str, listener: int) -> None:
            stream.ask(device, ChunkRequest(chunks=((0, 0),), listener=listener))

        def copies() -> int:
            return stream.count(FrameKind.CHUNK, index=0)

        ask("cam-a", 1)
        stream.wait_for(FrameKind.CHUNK, 1, index=0)
        assert copies() == 1
        ask("cam-a", 1)  # listening when it went out: in its backlog, not sent again
        time.sleep(0.6)
        assert copies() == 1
        assert stream.server.stats.skipped_recent >= 1
        # Two devices that subscribed later ask within the hold: one shared re-send.
        ask("cam-b", 2)
        time.sleep(0.1)  # a separate batch, still inside cam-b's hold
        ask("cam-c", 3)
        stream.wait_for(FrameKind.CHUNK, 2, index=0)
        time.sleep(0.6)
        assert copies() == 2
        assert stream.server.stats.held == 2  # both asked for it; one copy went out


def test_served_chunk_frames_are_read_into_place_with_index_digests(
    tmp_path: Path, short_range_model: Path
) -> None:
    """A chunk frame read straight into its buffer is byte for byte the encoded frame."""
    init_keys(tmp_path / "keys")
    served = load_bundle(make_bundle(tmp_path / "keys", tmp_path / "b", short_range_model, 1))
    entry = served.manifest.files[0]
    last = -(-entry.length // served.chunk_size) - 1
    for index in (0, last):
        chunk = served.chunk(0, index)
        assert chunk is not None
        frame = served.chunk_frame(0, index)
        assert frame is not None
        assert bytes(frame) == encode_frame(FrameKind.CHUNK, 0, index, chunk)
        assert decode_frame(bytes(frame)).header_ok
    assert served.chunk_frame(0, last + 1) is None
    assert served.chunk_frame(1, 0) is None
    assert served.chunk_frame(0, -1) is None
    served.close()


def test_first_chunks_wait_until_every_targeted_device_listens(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    """Publish knows its targets: the first window goes out once, when all of them listen."""
    with streaming(
        mosquitto,
        tmp_path,
        short_range_model,
        expect_devices=["cam-a", "cam-b", "cam-gone"],
        start_wait_s=1.5,
        start_quiet_s=60,  # the cap decides here; the quiet rule has its own test below
    ) as stream:
        stream.ask("cam-a", ChunkRequest(chunks=((0, 0),), indexes=(0,), listener=1))
        stream.wait_for(FrameKind.INDEX, 1)
        assert stream.count(FrameKind.INDEX) == 1  # the small index is never held back
        time.sleep(0.3)
        assert stream.count(FrameKind.CHUNK) == 0  # cam-b and cam-gone have not asked yet
        stream.ask("cam-b", ChunkRequest(chunks=((0, 0),), listener=2))
        time.sleep(0.3)
        assert stream.count(FrameKind.CHUNK) == 0  # cam-gone is targeted too
        # cam-gone never asks: the wait ends at start_wait_s and chunk 0 goes out once.
        stream.wait_for(FrameKind.CHUNK, 1)
        time.sleep(0.3)
        assert stream.count(FrameKind.CHUNK) == 1
        assert stream.server.stats.resent == 0


def test_first_chunks_go_as_soon_as_the_last_targeted_device_asks(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    with streaming(
        mosquitto,
        tmp_path,
        short_range_model,
        expect_devices=["cam-a", "cam-b"],
        start_wait_s=60,
        start_quiet_s=60,
    ) as stream:
        request = ChunkRequest(chunks=((0, 0), (0, 1)), listener=1)
        stream.ask("cam-a", request)
        time.sleep(0.5)
        assert stream.count(FrameKind.CHUNK) == 0
        stream.ask("cam-b", request)
        # Within 5 s, far below the 60 s cap: cam-b's request did it.
        stream.wait_for(FrameKind.CHUNK, 2)
        time.sleep(0.3)
        assert stream.count(FrameKind.CHUNK) == 2  # each chunk once, for both devices


def test_first_chunks_wait_while_targeted_devices_keep_arriving(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    """An offline target costs the quiet period after the last arrival, not the cap."""
    with streaming(
        mosquitto,
        tmp_path,
        short_range_model,
        expect_devices=["cam-a", "cam-b", "cam-gone"],
        start_wait_s=60,
        start_quiet_s=1.2,
    ) as stream:
        request = ChunkRequest(chunks=((0, 0),), listener=1)
        stream.ask("cam-a", request)
        time.sleep(0.6)
        stream.ask("cam-b", request)
        time.sleep(0.9)  # past cam-a's quiet period, within cam-b's: cam-b's arrival extended it
        assert stream.count(FrameKind.CHUNK) == 0
        # Within 5 s, far below the 60 s cap: the quiet period ended it.
        stream.wait_for(FrameKind.CHUNK, 1)
        time.sleep(0.3)
        assert stream.count(FrameKind.CHUNK) == 1  # chunk 0 once, for both devices
        assert stream.server.stats.start_listening == 2
        assert stream.server.stats.resent == 0


def test_a_device_listens_to_chunks_from_its_first_chunk_request(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    """A device drops chunks until its chunk index is whole: its index request is no proof.

    cam-a asked for the index first; chunk 0 then went out for cam-b before cam-a asked
    for chunks. The resend guard must not count cam-a as having been sent chunk 0.
    """
    with streaming(
        mosquitto, tmp_path, short_range_model, resend_guard_s=30.0, resend_hold_s=0.1
    ) as stream:
        stream.ask("cam-a", ChunkRequest(indexes=(0,), listener=1))
        assert stream.wait_for(FrameKind.INDEX, 1) == 1
        stream.ask("cam-b", ChunkRequest(chunks=((0, 0),), listener=2))
        assert stream.wait_for(FrameKind.CHUNK, 1) == 1
        # cam-a's index is whole now; it asks for chunk 0 with the same listener token.
        stream.ask("cam-a", ChunkRequest(chunks=((0, 0),), listener=1))
        assert stream.wait_for(FrameKind.CHUNK, 2) == 2  # served again, after the resend hold
        assert stream.server.stats.skipped_recent == 0


def test_acks_name_the_requests_each_batch_answered(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    """(listener, seq) of every answered request, once: sent or skipped; with a held re-send
    only once that went out; not while the start wait holds its chunks; never for a request
    without a number (older devices)."""
    with streaming(
        mosquitto,
        tmp_path,
        short_range_model,
        expect_devices=["cam-a", "cam-b"],
        start_quiet_s=5.0,
        start_wait_s=5.0,
    ) as stream:
        stream.ask("cam-a", ChunkRequest(indexes=(0,), listener=1, seq=0))
        assert stream.wait_answered((1, 0))  # index pieces are never held
        stream.ask("cam-a", ChunkRequest(chunks=((0, 0),), listener=1, seq=1))
        time.sleep(0.5)
        assert (1, 1) not in stream.answered()  # held: cam-b, also targeted, has not asked
        assert stream.count(FrameKind.CHUNK) == 0
        stream.ask("cam-b", ChunkRequest(chunks=((0, 0), (0, 1)), listener=2, seq=0))
        assert stream.wait_answered((2, 0))
        assert (1, 1) in stream.answered()
        assert stream.wait_for(FrameKind.CHUNK, 2) == 2
        stream.ask("cam-a", ChunkRequest(chunks=((0, 0),), listener=1, seq=2))  # in its backlog
        stream.ask("cam-b", ChunkRequest(chunks=((0, 1),), listener=2))  # no number
        assert stream.wait_answered((1, 2))
        time.sleep(0.3)
        assert stream.count(FrameKind.CHUNK) == 2  # the guard skipped both
        assert sorted(stream.answered()) == [(1, 0), (1, 1), (1, 2), (2, 0)]
        # A late joiner's re-send is held (shared with others for 0.1 s): its request is
        # named after the re-sent chunk, never before it (it would look lost).
        stream.ask("cam-c", ChunkRequest(chunks=((0, 0),), listener=3, seq=0))
        assert stream.wait_answered((3, 0))
        before = stream.frames_before_name((3, 0))
        assert before.count((FrameKind.CHUNK, 0)) == 2
        assert stream.server.stats.held == 1


def test_numbered_requests_skip_the_backlog_however_old_and_get_what_they_ask_again(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    """A device that numbers its requests flags re-asks: the rest is in its backlog.

    Past the guard (0.3 s here, 2 s by default) an unnumbered request from a listener
    gets a re-send; a numbered first ask does not (a CPU-starved device lags by more than
    the guard: before, that re-sent chunks it had queued), and a flagged re-ask does.
    """
    with streaming(
        mosquitto, tmp_path, short_range_model, resend_guard_s=0.3, resend_hold_s=0.05
    ) as stream:
        stream.ask("cam-a", ChunkRequest(chunks=((0, 0), (0, 1)), listener=1, seq=0))
        stream.ask("cam-b", ChunkRequest(chunks=((0, 0),), listener=2))
        assert stream.wait_for(FrameKind.CHUNK, 2) == 2
        time.sleep(0.5)  # past the guard
        stream.ask("cam-a", ChunkRequest(chunks=((0, 0), (0, 1)), listener=1, seq=1))
        assert stream.wait_answered((1, 1))
        time.sleep(0.3)
        assert stream.count(FrameKind.CHUNK) == 2  # both in cam-a's backlog: skipped
        stream.ask("cam-a", ChunkRequest(chunks=((0, 1),), listener=1, seq=2, again=((0, 1),)))
        assert stream.wait_for(FrameKind.CHUNK, 2, index=1) == 2  # lost: sent again
        stream.ask("cam-b", ChunkRequest(chunks=((0, 0),), listener=2))  # unnumbered
        assert stream.wait_for(FrameKind.CHUNK, 2, index=0) == 2  # the timed guard, as before


def test_batches_that_publish_nothing_share_acks(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    """Every ack reaches every device: skip-only batches are acknowledged at most every
    ``ack_every_s``, naming every request they answered; a batch with frames at once."""
    with streaming(mosquitto, tmp_path, short_range_model, ack_every_s=0.5) as stream:
        stream.ask("cam-a", ChunkRequest(chunks=((0, 0),), listener=1, seq=0))
        assert stream.wait_answered((1, 0))
        acks = stream.count(FrameKind.ACK)
        for seq in (1, 2, 3):  # already in cam-a's backlog: skipped, three batches
            stream.ask("cam-a", ChunkRequest(chunks=((0, 0),), listener=1, seq=seq))
            time.sleep(0.05)
        assert stream.wait_answered((1, 3))
        assert stream.count(FrameKind.ACK) == acks + 1
        assert stream.answered()[-3:] == [(1, 1), (1, 2), (1, 3)]
        assert stream.server.stats.skipped_recent == 3
