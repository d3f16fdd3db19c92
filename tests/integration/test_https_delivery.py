"""Model updates whose manifest names an HTTPS URL: real Mosquitto, real HTTPS server, real device.

The device is the real link + installer + UpdateService with the HTTPS fetcher; the
manifest travels over MQTT, the bytes over HTTPS, and op states come back over MQTT.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.config.uplink import MqttConfig
from agent.fleet.bundle import BundleSpec, create_bundle
from agent.fleet.chunkserver import ChunkServer
from agent.fleet.keys import init_keys
from agent.fleet.served import load_bundle
from agent.update.store.installer import Installer
from agent.update.store.probe import OfflineProbe
from agent.update.transfer.https_client import HttpsSettings
from agent.update.transfer.https_source import HttpsFetcher
from agent.update.transfer.service import UpdateService
from agent.update.transfer.settings import ServiceSettings
from agent.update.trust.policy import DeviceFacts
from agent.uplink.link import Link
from agent.uplink.topics import Topics as LinkTopics
from tests.integration.test_delivery import FLEET, ROOT, TOPICS, Operator, publish
from tests.support.https_server import HttpsFileServer, make_pki
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker


def test_update_from_https_url_and_failures_leave_the_active_model(
    mosquitto: MosquittoBroker, operator: Operator, tmp_path: Path, short_range_model: Path
) -> None:
    init_keys(tmp_path / "keys")
    pki = make_pki(tmp_path / "pki")
    www = tmp_path / "www"
    www.mkdir()
    server = HttpsFileServer(www, pki).start()

    def bundle(version: int, *, fallback: bool) -> Path:
        out = www / f"b{version}"  # served as /b<version>/<file>
        spec = BundleSpec(
            model=short_range_model,
            slot="detector",
            fleet=FLEET,
            manifest_version=version,
            release=version,
            chunk_size=16384,
            https_url=server.url(f"/b{version}/"),
            mqtt_fallback=fallback,
            deployment_id=f"dep-{version}",
        )
        create_bundle(spec, tmp_path / "keys", out)
        return out

    server.root = www / "b1"
    stop = threading.Event()
    state_dir = tmp_path / "dev"
    link = Link(
        MqttConfig(url=mosquitto.url, reconnect_min_s=0.2, reconnect_max_s=1.0),
        LinkTopics(ROOT, "cam-1", FLEET),
        state_dir,
        stop,
    )
    installer = Installer(
        state_dir,
        provisioned_root=tmp_path / "keys" / "root.json",
        facts=DeviceFacts("cam-1", FLEET, {"arch": "x86_64"}),
        probe=OfflineProbe(),
    )
    settings = ServiceSettings("cam-1", FLEET, stall_s=0.6, progress_interval_s=0.0)
    https = HttpsFetcher(HttpsSettings(ca_file=str(pki.ca), retry_base_s=0.05), stop)
    service = UpdateService(link, installer, TOPICS, settings, stop, https=https)
    link.start()
    assert link.wait_connected(10)
    service.start()
    chunk_stop = threading.Event()
    try:
        # 1. The bytes come over HTTPS only: no chunk server runs.
        first = bundle(1, fallback=False)
        final = operator.wait_terminal("cam-1", publish(operator, first))
        assert final["status"] == "successful", final
        assert final["outcome"] == "committed"
        committed = installer.store.current_sha("detector")
        assert committed == final["bundle_sha256"]
        size = short_range_model.stat().st_size
        assert server.sent(short_range_model.name) == size  # each byte once
        sources = {
            d.get("source") for d in operator.docs("cam-1", "dep-1") if d["status"] == "downloading"
        }
        assert "https" in sources

        # 2. A chunk damaged on every reply, no fallback: hash_mismatch, active model kept.
        second = bundle(2, fallback=False)
        server.root = second
        server.faults.corrupt_at, server.faults.corrupt_file = 20_000, short_range_model.name
        server.faults.corrupt_times = -1
        final = operator.wait_terminal("cam-1", publish(operator, second))
        assert final["status"] == "failed"
        assert final["reason"] == "hash_mismatch"
        assert installer.store.current_sha("detector") == committed

        # 3. The URL answers 404, the manifest allows MQTT: the device falls back to chunks.
        server.faults = type(server.faults)(status=404)
        third = bundle(3, fallback=True)
        chunks = ChunkServer(
            operator.client, TOPICS, [load_bundle(third)], chunk_stop, resend_guard_s=0.3
        )
        chunks.start()
        final = operator.wait_terminal("cam-1", publish(operator, third))
        assert final["status"] == "successful", final
        assert installer.store.current_sha("detector") == final["bundle_sha256"] != committed
        fell_back = [d for d in operator.docs("cam-1", "dep-3") if d.get("source") == "mqtt"]
        assert fell_back
        assert str(fell_back[0]["fallback"]).startswith("download_failed: ")

        # 4. 404 and HTTPS only: failed at once with download_failed, the model stays.
        active = installer.store.current_sha("detector")
        fourth = bundle(4, fallback=False)
        final = operator.wait_terminal("cam-1", publish(operator, fourth), timeout_s=10)
        assert final["status"] == "failed"
        assert final["reason"] == "download_failed"
        assert "404" in str(final["detail"])
        assert installer.store.current_sha("detector") == active
        assert not list((state_dir / "transfer").glob("*/files"))  # nothing left behind
    finally:
        stop.set()
        chunk_stop.set()
        service.join()
        link.stop()
        server.stop()
