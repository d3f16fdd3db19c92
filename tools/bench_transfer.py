"""Update delivery benchmarks against a local Mosquitto (figures go to docs/benchmarks.md).

  e2e    a model of --mb MB end to end (transfer, verify, stage, activate) through the real
         UpdateService and Installer, against raw broker throughput for the same message size
         (QoS 1 publish -> subscribe) measured in the same run.
  fleet  --devices lightweight devices (real UpdateService, Installer and transfer code; one
         shared MQTT connection fanned out in-process) taking one --mb MB rollout, against
         one device; prints time ratio and bytes the server published.

The trial step is replaced by an always-passing probe: a random payload is not a model,
and the trial is not part of what is measured here.

Usage: python tools/bench_transfer.py e2e --mb 50
       python tools/bench_transfer.py fleet --devices 200 --mb 10
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.fleet.bundle import BundleSpec, create_bundle  # noqa: E402 - after sys.path
from agent.fleet.chunkserver import ChunkServer  # noqa: E402
from agent.fleet.keys import init_keys  # noqa: E402
from agent.fleet.mqttclient import FleetClient  # noqa: E402
from agent.fleet.served import load_bundle  # noqa: E402
from agent.log import configure  # noqa: E402
from agent.update.installer import Installer  # noqa: E402
from agent.update.manifest import Manifest  # noqa: E402
from agent.update.policy import DeviceFacts  # noqa: E402
from agent.update.probe import TrialResult  # noqa: E402
from agent.update.transfer.service import ServiceSettings, UpdateService  # noqa: E402
from agent.update.transfer.wire import HEADER_BYTES, Topics  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402

TOPICS = Topics("ea/v1")
FLEET = "bench"
WINDOW = int(os.environ.get("BENCH_WINDOW", "16"))
Callback = Callable[[str, bytes], None]


class PassProbe:
    def trial(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        del slot, manifest  # the trial is not what this benchmark measures
        return TrialResult(ok=model_path.is_file(), detail="bench")

    def restored(self, slot: str, model_path: Path | None) -> None:
        del slot, model_path


class FanoutBus:
    """Many simulated devices on one MQTT connection: each filter subscribed once."""

    def __init__(self, client: FleetClient) -> None:
        self._client = client
        self._subs: dict[str, list[Callback]] = {}
        self._lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object:
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topic_filter: str, callback: Callback) -> None:
        with self._lock:
            first = topic_filter not in self._subs
            self._subs.setdefault(topic_filter, []).append(callback)
        if first:
            self._client.subscribe(topic_filter, functools.partial(self._fan, topic_filter))

    def _fan(self, topic_filter: str, topic: str, payload: bytes) -> None:
        with self._lock:
            callbacks = list(self._subs.get(topic_filter, ()))
        for callback in callbacks:
            callback(topic, payload)


def raw_throughput(url: str, size: int, count: int) -> float:
    """Bytes/s of QoS 1 messages of ``size`` bytes from one client to another via the broker."""
    got = threading.Event()
    received = [0]

    def on_message(_topic: str, _payload: bytes) -> None:
        received[0] += 1
        if received[0] >= count:
            got.set()

    sub = FleetClient(url).connect()
    pub = FleetClient(url).connect()
    sub.subscribe("bench/raw", on_message)
    time.sleep(0.3)
    payload = os.urandom(size)
    start = time.perf_counter()
    window = 16  # the same in-flight bound the transfer uses
    infos = []
    for n in range(count):
        infos.append(pub.publish("bench/raw", payload, qos=1))
        if len(infos) >= window:
            infos.pop(0).wait_for_publish(10)
        if n % 64 == 0 and received[0] < n - 256:
            time.sleep(0.001)
    got.wait(120)
    elapsed = time.perf_counter() - start
    sub.close()
    pub.close()
    return size * received[0] / elapsed


def make_bundle(work: Path, mb: float, chunk_size: int) -> Path:
    keys = work / "keys"
    init_keys(keys)
    model = work / "model.tflite"
    model.write_bytes(os.urandom(int(mb * 1024 * 1024)))
    spec = BundleSpec(
        model=model,
        slot="detector",
        fleet=FLEET,
        manifest_version=1,
        release=1,
        chunk_size=chunk_size,
    )
    create_bundle(spec, keys, work / "bundle")
    return work / "bundle"


def run_devices(  # noqa: PLR0917 - a benchmark helper called twice
    url: str, bundle: Path, keys: Path, work: Path, names: list[str], timeout_s: float
) -> dict[str, Any]:
    client = FleetClient(url).connect()
    bus = FanoutBus(client)
    stop = threading.Event()
    services = []
    for name in names:
        state = work / "devices" / name
        installer = Installer(
            state,
            provisioned_root=keys / "root.json",
            facts=DeviceFacts(name, FLEET, {}),
            probe=PassProbe(),
        )
        settings = ServiceSettings(name, FLEET, window=WINDOW, stall_s=2.0, progress_interval_s=5.0)
        service = UpdateService(bus, installer, TOPICS, settings, stop)
        service.start()
        services.append(service)
    time.sleep(0.5)
    op = FleetClient(url).connect()
    server_stop = threading.Event()
    served = load_bundle(bundle)
    server = ChunkServer(op, TOPICS, [served], server_stop)
    server.start()
    start = time.perf_counter()
    op.publish_wait(TOPICS.deploy(FLEET, "detector"), served.envelope_bytes, retain=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(s.results for s in services):
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    ok = sum(1 for s in services if s.results and s.results[-1]["status"] == "successful")
    stop.set()
    server_stop.set()
    for service in services:
        service.join()
    server.join()
    op.publish_wait(TOPICS.deploy(FLEET, "detector"), b"", retain=True)
    op.close()
    client.close()
    return {
        "devices": len(names),
        "ok": ok,
        "seconds": round(elapsed, 3),
        "server_frames": server.stats.frames,
        "server_bytes": server.stats.bytes,
        "bundle_bytes": served.manifest.total_length,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["e2e", "fleet"])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=128 * 1024)
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (default: temp)")
    args = parser.parse_args()
    configure(level="error")
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir=args.work))
    broker = MosquittoBroker(work / "broker")
    broker.start()
    try:
        bundle = make_bundle(work, args.mb, args.chunk_size)
        size = args.chunk_size + HEADER_BYTES
        if args.mode == "e2e":
            count = max(64, int(args.mb * 1024 * 1024 / args.chunk_size))
            raw = raw_throughput(broker.url, size, count)
            e2e = run_devices(broker.url, bundle, work / "keys", work / "e2e", ["dev-0"], 600)
            rate = e2e["bundle_bytes"] / e2e["seconds"]
            out = {
                "mode": "e2e",
                "mb": args.mb,
                "chunk_size": args.chunk_size,
                "raw_mb_s": round(raw / 1e6, 1),
                "e2e_mb_s": round(rate / 1e6, 1),
                "share_of_raw": round(rate / raw, 2),
                **e2e,
            }
        else:
            one = run_devices(broker.url, bundle, work / "keys", work / "one", ["dev-0"], 600)
            many = run_devices(
                broker.url,
                bundle,
                work / "keys",
                work / "many",
                [f"dev-{i}" for i in range(args.devices)],
                1800,
            )
            out = {
                "mode": "fleet",
                "mb": args.mb,
                "one": one,
                "many": many,
                "time_ratio": round(many["seconds"] / one["seconds"], 2),
                "server_bytes_per_bundle": round(many["server_bytes"] / many["bundle_bytes"], 2),
            }
        print(json.dumps(out))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
