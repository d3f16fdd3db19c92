"""Model updates delivered over a real Mosquitto: device link + installer + update service."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config.uplink import MqttConfig
from agent.fleet.bundle import BundleSpec, create_bundle
from agent.fleet.chunkserver import ChunkServer, Mangle
from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import load_bundle
from agent.update.store.installer import Installer
from agent.update.store.probe import OfflineProbe
from agent.update.transfer.service import UpdateService
from agent.update.transfer.settings import ServiceSettings
from agent.update.transfer.wire import HEADER_BYTES, Topics
from agent.update.trust.policy import DeviceFacts
from agent.uplink.link import Link
from agent.uplink.topics import Topics as LinkTopics
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker
ROOT = "ea/v1"
FLEET = "f1"
TOPICS = Topics(ROOT)


@dataclass
class Device:
    device_id: str
    state_dir: Path
    installer: Installer
    service: UpdateService
    link: Link
    stop: threading.Event

    def close(self) -> None:
        self.stop.set()
        self.service.join()
        self.link.stop()


@dataclass
class Operator:
    client: FleetClient
    states: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_state(self, topic: str, payload: bytes) -> None:
        if payload:
            with self.lock:
                self.states.setdefault(topic, []).append(json.loads(payload))

    def docs(self, device: str, dep: str) -> list[dict[str, object]]:
        with self.lock:
            return list(self.states.get(TOPICS.model_update(device, dep), []))

    def wait_terminal(self, device: str, dep: str, timeout_s: float = 30.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            docs = self.docs(device, dep)
            if docs and docs[-1]["status"] in ("successful", "failed"):
                return docs[-1]
            time.sleep(0.05)
        topic = TOPICS.model_update(device, dep)
        raise AssertionError(f"no terminal state on {topic}: {self.docs(device, dep)[-3:]}")


def make_bundle(
    keys: Path, out: Path, model: Path, version: int, chunk_size: int = 16384, **extra: object
) -> Path:
    spec = BundleSpec(
        model=model,
        slot="detector",
        fleet=FLEET,
        manifest_version=version,
        release=version,
        chunk_size=chunk_size,
        **extra,  # type: ignore[arg-type]
    )
    create_bundle(spec, keys, out)
    return out


def start_device(
    broker: MosquittoBroker, keys: Path, state_dir: Path, device_id: str = "cam-1", **kw: object
) -> Device:
    stop = threading.Event()
    cfg = MqttConfig(url=broker.url, reconnect_min_s=0.2, reconnect_max_s=1.0)
    link = Link(cfg, LinkTopics(ROOT, device_id, FLEET), state_dir, stop)
    # The free-space seam (``free_bytes``), where a test fakes a small disk.
    seam: dict[str, Any] = {"free_bytes": kw.pop("free_bytes")} if "free_bytes" in kw else {}
    installer = Installer(
        state_dir,
        provisioned_root=keys / "root.json",
        facts=DeviceFacts(device_id, FLEET, {"arch": "x86_64"}),
        probe=kw.pop("probe", OfflineProbe()),  # type: ignore[arg-type]
        **seam,
    )
    settings = ServiceSettings(device_id, FLEET, stall_s=0.6, **kw)  # type: ignore[arg-type]
    service = UpdateService(link, installer, TOPICS, settings, stop, **seam)
    link.start()
    assert link.wait_connected(10)
    service.start()
    return Device(device_id, state_dir, installer, service, link, stop)


def serve(
    op: Operator, bundle: Path, mangle: Mangle | None = None
) -> tuple[ChunkServer, threading.Event]:
    stop = threading.Event()
    # The resend guard stays below the devices' 0.6 s stall timer, as in production (2 s / 5 s).
    server = ChunkServer(
        op.client, TOPICS, [load_bundle(bundle)], stop, mangle=mangle, resend_guard_s=0.3
    )
    server.start()
    return server, stop


def publish(op: Operator, bundle: Path) -> str:
    served = load_bundle(bundle)
    op.client.publish_wait(TOPICS.deploy(FLEET, "detector"), served.envelope_bytes, retain=True)
    return served.deployment_id


def test_full_update_reports_every_phase_and_ignores_replays(
    mosquitto, operator, keys, tmp_path, short_range_model
):
    bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 1)
    server, server_stop = serve(operator, bundle)
    device = start_device(mosquitto, keys, tmp_path / "dev")
    try:
        dep = publish(operator, bundle)
        final = operator.wait_terminal("cam-1", dep)
        assert final["status"] == "successful", final
        assert final["outcome"] == "committed"
        sha = load_bundle(bundle).envelope_bytes
        assert device.installer.store.current_sha("detector") == final["bundle_sha256"]
        assert sha  # the manifest that authorised it is what the device reports
        docs = operator.states[TOPICS.model_update("cam-1", dep)]
        statuses = [d["status"] for d in docs]
        assert statuses[0] == "downloading"
        assert "installing" in statuses
        versions = [d["status_version"] for d in docs]
        assert versions == sorted(versions)
        assert len(set(versions)) == len(versions)
        # Every chunk came through the shared stream once (no corruption, no re-requests).
        served = load_bundle(bundle)
        assert not list((device.state_dir / "transfer").glob("*/files"))  # cleaned up
        # The stream was subscribed for the transfer only.
        assert not [f for f in device.link._routes.filters() if "/xfer/" in f]
        assert not device.link._unsubs
        # T4: the same retained manifest again (as after a reconnect): no second install.
        before = len(docs)
        publish(operator, bundle)
        time.sleep(0.8)
        assert len(operator.states[TOPICS.model_update("cam-1", dep)]) == before
        # T3: an older, validly signed manifest replayed on the retained topic is rejected.
        old = make_bundle(keys, tmp_path / "b0", short_range_model, 1, deployment_id="old-dep")
        assert served.manifest.manifest_version == 1
        operator.client.publish_wait(
            TOPICS.deploy(FLEET, "detector"), load_bundle(old).envelope_bytes, retain=True
        )
        rejected = operator.wait_terminal("cam-1", "old-dep")
        assert rejected["status"] == "failed"
        assert rejected["reason"] == "version_conflict"
        assert device.installer.store.current_sha("detector") == final["bundle_sha256"]
    finally:
        device.close()
        server_stop.set()
        server.join()


def chaos(seed: int) -> Mangle:
    rnd = random.Random(seed)

    def mangle(frames: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for frame in frames:
            roll = rnd.random()
            if roll < 0.15:
                continue  # dropped
            if roll < 0.25:
                bad = bytearray(frame)
                bad[HEADER_BYTES + 3] ^= 0x5A  # corrupted payload, header hash kept
                out.append(bytes(bad))
            out.append(frame)
            if rnd.random() < 0.2:
                out.append(frame)  # duplicated
        rnd.shuffle(out)  # reordered
        return out

    return mangle


def test_dropped_duplicated_reordered_and_corrupted_chunks(
    mosquitto, operator, keys, tmp_path, short_range_model
):
    bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 1, chunk_size=8192)
    server, server_stop = serve(operator, bundle, mangle=chaos(7))
    device = start_device(mosquitto, keys, tmp_path / "dev")
    try:
        dep = publish(operator, bundle)
        final = operator.wait_terminal("cam-1", dep, timeout_s=60)
        assert final["status"] == "successful", final
        assert device.service.corrupt_frames > 0  # corrupted frames were seen and dropped
        progress = [
            d["progress"]
            for d in operator.states[TOPICS.model_update("cam-1", dep)]
            if "progress" in d
        ]
        assert progress
        assert server.stats.frames > len(load_bundle(bundle).index_bytes) // 8192
    finally:
        device.close()
        server_stop.set()
        server.join()


def test_chunks_above_broker_message_size_limit_are_reported(tmp_path, keys, short_range_model):
    # The manifest and acks fit; 16 KiB chunks do not: the device must say so, not hang.
    broker = MosquittoBroker(tmp_path / "small", extra_config=["message_size_limit 6000"])
    broker.start()
    client = FleetClient(broker.url).connect()
    op = Operator(client)
    client.subscribe(TOPICS.model_update_filter(), op.on_state)
    bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 1, chunk_size=4096 * 4)
    server, server_stop = serve(op, bundle)
    device = start_device(broker, keys, tmp_path / "dev")
    try:
        dep = publish(op, bundle)
        final = op.wait_terminal("cam-1", dep, timeout_s=30)
        assert final["status"] == "failed"
        assert final["reason"] == "too_large"
        assert device.installer.store.current_sha("detector") is None
    finally:
        device.close()
        server_stop.set()
        server.join()
        client.close()
        broker.stop()
