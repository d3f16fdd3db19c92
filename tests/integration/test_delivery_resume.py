"""Kill the device mid-transfer and restart the broker: the transfer resumes from the bitmap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.fleet.chunkserver import ChunkServer
from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import load_bundle
from agent.update.transfer.wire import FrameKind, decode_frame
from tests.integration.test_delivery import (
    FLEET,
    TOPICS,
    Operator,
    make_bundle,
)
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker
WINDOW = 8  # what tests/support/update_device.py configures
REPO = Path(__file__).resolve().parents[2]


def _device(broker: MosquittoBroker, keys: Path, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.update_device",
            broker.url,
            str(keys),
            str(state),
            "cam-k",
            FLEET,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=(state.parent / f"{state.name}.log").open("ab"),
    )


def test_kill_and_broker_restart_mid_transfer_resume_from_bitmap(
    mosquitto, keys, tmp_path, short_range_model
):
    bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 1, chunk_size=4096)
    served_chunks: list[int] = []
    lock = threading.Lock()

    def slow(frames: list[bytes]) -> list[bytes]:
        time.sleep(0.04)  # slow link: leaves time to kill mid-transfer
        with lock:
            served_chunks.extend(
                decode_frame(f).index for f in frames if decode_frame(f).kind is FrameKind.CHUNK
            )
        return frames

    def operator_up() -> tuple[Operator, ChunkServer, threading.Event]:
        client = FleetClient(mosquitto.url).connect()
        op = Operator(client)
        client.subscribe(TOPICS.model_update_filter(), op.on_state)
        stop = threading.Event()
        server = ChunkServer(client, TOPICS, [load_bundle(bundle)], stop, mangle=slow)
        server.start()
        return op, server, stop

    op, server, server_stop = operator_up()
    state = tmp_path / "dev"
    state.mkdir()
    proc = _device(mosquitto, keys, state)
    total = sum(-(-f.length // 4096) for f in load_bundle(bundle).manifest.files)
    try:
        served = load_bundle(bundle)
        op.client.publish_wait(TOPICS.deploy(FLEET, "detector"), served.envelope_bytes, retain=True)
        deadline = time.monotonic() + 30
        while len(served_chunks) < total // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(served_chunks) >= total // 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        # Killed while subscribed to the stream: the restart unsubscribes it unless resumed.
        marker = (state / "transfer" / "stream").read_text()
        assert marker.endswith(f"/xfer/{served.deployment_id}/s")
        with lock:
            before_kill = set(served_chunks)
            served_chunks.clear()
        # The broker goes away and comes back while the device is down.
        server_stop.set()
        server.join()
        op.client.close()
        mosquitto.restart()
        op, server, server_stop = operator_up()
        op.client.publish_wait(TOPICS.deploy(FLEET, "detector"), served.envelope_bytes, retain=True)
        proc = _device(mosquitto, keys, state)
        final = op.wait_terminal("cam-k", served.deployment_id, timeout_s=60)
        assert final["status"] == "successful", final
        assert not (state / "transfer" / "stream").exists()
        with lock:
            after = list(served_chunks)
        refetched = [i for i in after if i in before_kill]
        # Chunks on disk are never fetched again; at most the window that was in flight.
        assert len(refetched) <= WINDOW, (len(refetched), len(before_kill), total)
        assert len(set(after) | before_kill) == total
        print(f"chunks={total} served_before_kill={len(before_kill)} refetched={len(refetched)}")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
        server_stop.set()
        server.join()
        op.client.close()
