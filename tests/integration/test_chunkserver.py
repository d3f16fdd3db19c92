"""The chunk server's sharing rules against a real Mosquitto: resend guard and resend hold."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.fleet.chunkserver import ChunkServer
from agent.fleet.keys import init_keys
from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import load_bundle
from agent.update.transfer.wire import ChunkRequest, FrameKind, decode_frame, encode_frame
from tests.integration.test_delivery import FLEET, TOPICS, make_bundle
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker


def test_guard_skips_listeners_that_saw_it_and_hold_shares_resends(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    init_keys(tmp_path / "keys")
    served = load_bundle(make_bundle(tmp_path / "keys", tmp_path / "b", short_range_model, 1))
    dep = served.deployment_id
    seen: list[int] = []
    lock = threading.Lock()

    def on_frame(_topic: str, payload: bytes) -> None:
        frame = decode_frame(payload)
        if frame.kind is FrameKind.CHUNK:
            with lock:
                seen.append(frame.index)

    watcher = FleetClient(mosquitto.url).connect()
    watcher.subscribe(TOPICS.stream(FLEET, dep), on_frame)
    server_client = FleetClient(mosquitto.url).connect()
    devices = FleetClient(mosquitto.url).connect()
    stop = threading.Event()
    server = ChunkServer(
        server_client, TOPICS, [served], stop, resend_guard_s=5.0, resend_hold_s=0.3
    )
    server.start()
    time.sleep(0.3)  # SUBACKs

    def ask(device: str, listener: int) -> None:
        request = ChunkRequest(chunks=((0, 0),), listener=listener)
        devices.publish(TOPICS.request(device, dep), request.encode())

    def copies() -> int:
        with lock:
            return seen.count(0)

    try:
        ask("cam-a", 1)
        deadline = time.monotonic() + 5
        while copies() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert copies() == 1
        ask("cam-a", 1)  # listening when it went out: in its backlog, not sent again
        time.sleep(0.6)
        assert copies() == 1
        assert server.stats.skipped_recent >= 1
        # Two devices that subscribed later ask within the hold: one shared re-send.
        ask("cam-b", 2)
        time.sleep(0.1)  # a separate batch, still inside cam-b's hold
        ask("cam-c", 3)
        deadline = time.monotonic() + 5
        while copies() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.6)
        assert copies() == 2
        assert server.stats.held == 2  # both asked for it; one copy went out
    finally:
        stop.set()
        server.join()
        for client in (watcher, server_client, devices):
            client.close()


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
    init_keys(tmp_path / "keys")
    served = load_bundle(make_bundle(tmp_path / "keys", tmp_path / "b", short_range_model, 1))
    dep = served.deployment_id
    seen: list[tuple[FrameKind, int]] = []
    lock = threading.Lock()

    def on_frame(_topic: str, payload: bytes) -> None:
        frame = decode_frame(payload)
        if frame.kind in (FrameKind.CHUNK, FrameKind.INDEX):
            with lock:
                seen.append((frame.kind, frame.index))

    def count(kind: FrameKind) -> int:
        with lock:
            return sum(1 for k, _ in seen if k is kind)

    def wait_for(kind: FrameKind, n: int) -> None:
        deadline = time.monotonic() + 5
        while count(kind) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    watcher = FleetClient(mosquitto.url).connect()
    watcher.subscribe(TOPICS.stream(FLEET, dep), on_frame)
    server_client = FleetClient(mosquitto.url).connect()
    devices = FleetClient(mosquitto.url).connect()
    stop = threading.Event()
    waiting = ChunkServer(
        server_client,
        TOPICS,
        [served],
        stop,
        expect_devices=["cam-a", "cam-b", "cam-gone"],
        start_wait_s=1.5,
        start_quiet_s=60,  # the cap decides here; the quiet rule has its own test below
    )
    waiting.start()
    time.sleep(0.3)  # SUBACKs

    def ask(device: str, listener: int, request: ChunkRequest) -> None:
        devices.publish(TOPICS.request(device, dep), request.encode())

    try:
        ask("cam-a", 1, ChunkRequest(chunks=((0, 0),), indexes=(0,), listener=1))
        wait_for(FrameKind.INDEX, 1)
        assert count(FrameKind.INDEX) == 1  # the small index is never held back
        time.sleep(0.3)
        assert count(FrameKind.CHUNK) == 0  # cam-b and cam-gone have not asked yet
        ask("cam-b", 2, ChunkRequest(chunks=((0, 0),), listener=2))
        time.sleep(0.3)
        assert count(FrameKind.CHUNK) == 0  # cam-gone is targeted too
        # cam-gone never asks: the wait ends at start_wait_s and chunk 0 goes out once.
        wait_for(FrameKind.CHUNK, 1)
        time.sleep(0.3)
        assert count(FrameKind.CHUNK) == 1
        assert waiting.stats.resent == 0
    finally:
        stop.set()
        waiting.join()
        for client in (watcher, server_client, devices):
            client.close()


def test_first_chunks_go_as_soon_as_the_last_targeted_device_asks(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    init_keys(tmp_path / "keys")
    served = load_bundle(make_bundle(tmp_path / "keys", tmp_path / "b", short_range_model, 1))
    dep = served.deployment_id
    chunks: list[int] = []
    watcher = FleetClient(mosquitto.url).connect()
    watcher.subscribe(
        TOPICS.stream(FLEET, dep),
        lambda _t, p: chunks.append(1) if decode_frame(p).kind is FrameKind.CHUNK else None,
    )
    server_client = FleetClient(mosquitto.url).connect()
    devices = FleetClient(mosquitto.url).connect()
    stop = threading.Event()
    server = ChunkServer(
        server_client,
        TOPICS,
        [served],
        stop,
        expect_devices=["cam-a", "cam-b"],
        start_wait_s=60,
        start_quiet_s=60,
    )
    server.start()
    time.sleep(0.3)  # SUBACKs
    try:
        request = ChunkRequest(chunks=((0, 0), (0, 1)), listener=1)
        devices.publish(TOPICS.request("cam-a", dep), request.encode())
        time.sleep(0.5)
        assert chunks == []
        devices.publish(TOPICS.request("cam-b", dep), request.encode())
        deadline = time.monotonic() + 5  # far below the 60 s cap: cam-b's request did it
        while len(chunks) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert len(chunks) == 2  # each chunk once, for both devices
    finally:
        stop.set()
        server.join()
        for client in (watcher, server_client, devices):
            client.close()


def test_first_chunks_wait_while_targeted_devices_keep_arriving(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    """An offline target costs the quiet period after the last arrival, not the cap."""
    init_keys(tmp_path / "keys")
    served = load_bundle(make_bundle(tmp_path / "keys", tmp_path / "b", short_range_model, 1))
    dep = served.deployment_id
    chunks: list[int] = []
    watcher = FleetClient(mosquitto.url).connect()
    watcher.subscribe(
        TOPICS.stream(FLEET, dep),
        lambda _t, p: chunks.append(1) if decode_frame(p).kind is FrameKind.CHUNK else None,
    )
    server_client = FleetClient(mosquitto.url).connect()
    devices = FleetClient(mosquitto.url).connect()
    stop = threading.Event()
    server = ChunkServer(
        server_client,
        TOPICS,
        [served],
        stop,
        expect_devices=["cam-a", "cam-b", "cam-gone"],
        start_wait_s=60,
        start_quiet_s=1.2,
    )
    server.start()
    time.sleep(0.3)  # SUBACKs
    try:
        request = ChunkRequest(chunks=((0, 0),), listener=1)
        devices.publish(TOPICS.request("cam-a", dep), request.encode())
        time.sleep(0.6)
        devices.publish(TOPICS.request("cam-b", dep), request.encode())
        time.sleep(0.9)  # past cam-a's quiet period, within cam-b's: cam-b's arrival extended it
        assert chunks == []
        deadline = time.monotonic() + 5  # far below the 60 s cap: the quiet period ended it
        while not chunks and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert len(chunks) == 1  # chunk 0 once, for both devices
        assert server.stats.start_listening == 2
        assert server.stats.resent == 0
    finally:
        stop.set()
        server.join()
        for client in (watcher, server_client, devices):
            client.close()


def test_a_device_listens_to_chunks_from_its_first_chunk_request(
    mosquitto: MosquittoBroker, tmp_path: Path, short_range_model: Path
) -> None:
    """A device drops chunks until its chunk index is whole: its index request is no proof.

    cam-a asked for the index first; chunk 0 then went out for cam-b before cam-a asked
    for chunks. The resend guard must not count cam-a as having been sent chunk 0.
    """
    init_keys(tmp_path / "keys")
    served = load_bundle(make_bundle(tmp_path / "keys", tmp_path / "b", short_range_model, 1))
    dep = served.deployment_id
    seen: list[FrameKind] = []
    lock = threading.Lock()

    def on_frame(_topic: str, payload: bytes) -> None:
        with lock:
            seen.append(decode_frame(payload).kind)

    def wait_for(kind: FrameKind, n: int) -> int:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with lock:
                if seen.count(kind) >= n:
                    break
            time.sleep(0.01)
        with lock:
            return seen.count(kind)

    watcher = FleetClient(mosquitto.url).connect()
    watcher.subscribe(TOPICS.stream(FLEET, dep), on_frame)
    server_client = FleetClient(mosquitto.url).connect()
    devices = FleetClient(mosquitto.url).connect()
    stop = threading.Event()
    server = ChunkServer(
        server_client, TOPICS, [served], stop, resend_guard_s=30.0, resend_hold_s=0.1
    )
    server.start()
    time.sleep(0.3)  # SUBACKs
    try:
        devices.publish(
            TOPICS.request("cam-a", dep), ChunkRequest(indexes=(0,), listener=1).encode()
        )
        assert wait_for(FrameKind.INDEX, 1) == 1
        request = ChunkRequest(chunks=((0, 0),), listener=2)
        devices.publish(TOPICS.request("cam-b", dep), request.encode())
        assert wait_for(FrameKind.CHUNK, 1) == 1
        # cam-a's index is whole now; it asks for chunk 0 with the same listener token.
        request = ChunkRequest(chunks=((0, 0),), listener=1)
        devices.publish(TOPICS.request("cam-a", dep), request.encode())
        assert wait_for(FrameKind.CHUNK, 2) == 2  # served again, after the resend hold
        assert server.stats.skipped_recent == 0
    finally:
        stop.set()
        server.join()
        for client in (watcher, server_client, devices):
            client.close()
