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
import subprocess
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
from agent.update.installer import Installer, InstallResult  # noqa: E402
from agent.update.manifest import Manifest  # noqa: E402
from agent.update.policy import DeviceFacts  # noqa: E402
from agent.update.probe import TrialResult  # noqa: E402
from agent.update.transfer.service import ServiceSettings, UpdateService  # noqa: E402
from agent.update.transfer.wire import HEADER_BYTES, Topics  # noqa: E402
from agent.update.verify import Verified  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402

TOPICS = Topics("ea/v1")
FLEET = "bench"
WINDOW = int(os.environ.get("BENCH_WINDOW", "32"))
# Nagle off on the broker's sockets (docs/protocol.md, "Broker settings"); ";"-separated lines.
BROKER_EXTRA = [
    line for line in os.environ.get("BENCH_BROKER", "set_tcp_nodelay true").split(";") if line
]
Callback = Callable[[str, bytes], None]


class PassProbe:
    def trial(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        del slot, manifest  # the trial is not what this benchmark measures
        return TrialResult(ok=model_path.is_file(), detail="bench")

    def restored(self, slot: str, model_path: Path | None) -> None:
        del slot, model_path


class DeliveryOnlyInstaller(Installer):
    """The real verify (signature, targeting, floors); ``install`` only confirms the files.

    ``fleet --install skip``: the figure then covers the delivery protocol (manifest,
    chunk transfer, per-chunk and whole-file checks) without 200 stagings competing for
    this process's one GIL.
    """

    def install(self, verified: Verified, files_dir: Path) -> InstallResult:
        manifest = verified.manifest
        ok = all((files_dir / f.name).stat().st_size == f.length for f in manifest.files)
        outcome = "committed" if ok else "inconsistent"
        return InstallResult(manifest.slot, outcome, None, manifest.manifest_version)


class FanoutHub:
    """Many simulated devices on one MQTT connection: each filter subscribed once.

    The broker sends every stream message once to this connection; the hub hands the
    same bytes to every device subscribed to it (in-process fan-out).
    """

    def __init__(self, client: FleetClient) -> None:
        self.client = client
        self._subs: dict[str, dict[int, Callback]] = {}
        self._lock = threading.Lock()

    def add(self, topic_filter: str, owner: int, callback: Callback) -> None:
        with self._lock:
            first = topic_filter not in self._subs
            self._subs.setdefault(topic_filter, {})[owner] = callback
        if first:
            self.client.subscribe(topic_filter, functools.partial(self._fan, topic_filter))

    def remove(self, topic_filter: str, owner: int) -> None:
        with self._lock:
            callbacks = self._subs.get(topic_filter, {})
            callbacks.pop(owner, None)
            last = topic_filter in self._subs and not callbacks
            if last:
                del self._subs[topic_filter]
        if last:
            self.client.unsubscribe(topic_filter)

    def _fan(self, topic_filter: str, topic: str, payload: bytes) -> None:
        with self._lock:
            callbacks = list(self._subs.get(topic_filter, {}).values())
        for callback in callbacks:
            callback(topic, payload)


class DeviceBus:
    """One simulated device's view of the hub (the ``Bus`` the update service uses)."""

    def __init__(self, hub: FanoutHub, owner: int) -> None:
        self._hub = hub
        self._owner = owner
        self.phases: dict[str, float] = {}  # op status -> first time it was published

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object:
        if "/op/model_update/" in topic:
            status = json.loads(payload).get("status", "")
            self.phases.setdefault(status, time.perf_counter())
        return self._hub.client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topic_filter: str, callback: Callback) -> None:
        self._hub.add(topic_filter, self._owner, callback)

    def unsubscribe(self, topic_filter: str) -> None:
        self._hub.remove(topic_filter, self._owner)


def raw_publisher(url: str, size: int, count: int, qos: int) -> None:
    """The sending side of the raw figure (own process): ``count`` messages of ``size`` bytes."""
    pub = FleetClient(url).connect()
    payload = os.urandom(size)
    window = 16  # the in-flight bound of the previous figures (QoS 1)
    infos = []
    for _ in range(count):
        infos.append(pub.publish("bench/raw", payload, qos=qos))
        if qos and len(infos) >= window:
            infos.pop(0).wait_for_publish(10)
    for info in infos:
        info.wait_for_publish(10)
    time.sleep(0.5)
    pub.close()


def raw_throughput(url: str, size: int, count: int, qos: int) -> float:
    """Bytes/s from a publisher process through the broker to a subscriber in this process."""
    got = threading.Event()
    times: list[float] = []

    def on_message(_topic: str, _payload: bytes) -> None:
        times.append(time.perf_counter())
        if len(times) >= count:
            got.set()

    sub = FleetClient(url).connect()
    sub.subscribe("bench/raw", on_message)
    time.sleep(0.3)
    cmd = [sys.executable, __file__, "_rawpub", "--url", url, "--size", str(size)]
    proc = subprocess.Popen([*cmd, "--count", str(count), "--qos", str(qos)])
    got.wait(120)
    proc.wait(60)
    sub.close()
    if len(times) < 2:
        return 0.0
    # First to last arrival: excludes the publisher's start-up; QoS 0 losses count as lost.
    return size * (len(times) - 1) / (times[-1] - times[0])


class ServerProcess:
    """The chunk server in its own process, as on a real operator machine."""

    def __init__(self, url: str, bundle: Path) -> None:
        cmd = [sys.executable, __file__, "_server", "--url", url, "--bundle", str(bundle)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("chunk server process did not start")

    def finish(self) -> dict[str, Any]:
        out, _ = self.proc.communicate("", timeout=60)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def serve_process(url: str, bundle: Path) -> None:
    client = FleetClient(url).connect()
    stop = threading.Event()
    server = ChunkServer(client, TOPICS, [load_bundle(bundle)], stop)
    server.start()
    time.sleep(0.2)
    cpu_start = time.process_time()
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    stop.set()
    server.join()
    client.close()
    stats = server.stats
    doc = {
        "frames": stats.frames,
        "bytes": stats.bytes,
        "skipped": stats.skipped_recent,
        "cpu_s": round(time.process_time() - cpu_start, 2),
    }
    print(json.dumps(doc))


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
    url: str,
    bundle: Path,
    keys: Path,
    work: Path,
    names: list[str],
    timeout_s: float,
    installer_class: type[Installer] = Installer,
) -> dict[str, Any]:
    client = FleetClient(url).connect()
    hub = FanoutHub(client)
    stop = threading.Event()
    services = []
    buses = []
    for owner, name in enumerate(names):
        state = work / "devices" / name
        installer = installer_class(
            state,
            provisioned_root=keys / "root.json",
            facts=DeviceFacts(name, FLEET, {}),
            probe=PassProbe(),
        )
        settings = ServiceSettings(name, FLEET, window=WINDOW, stall_s=2.0, progress_interval_s=5.0)
        bus = DeviceBus(hub, owner)
        buses.append(bus)
        service = UpdateService(bus, installer, TOPICS, settings, stop)
        service.start()
        services.append(service)
    time.sleep(0.5)
    op = FleetClient(url).connect()
    served = load_bundle(bundle)
    server = ServerProcess(url, bundle)
    start = time.perf_counter()
    cpu_start = time.process_time()
    op.publish_wait(TOPICS.deploy(FLEET, "detector"), served.envelope_bytes, retain=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(s.results for s in services):
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start

    def last(status: str) -> float | None:
        times = [b.phases[status] for b in buses if status in b.phases]
        return round(max(times) - start, 3) if times else None

    ok = sum(1 for s in services if s.results and s.results[-1]["status"] == "successful")
    stop.set()
    for service in services:
        service.join()
    server_stats = server.finish()
    op.publish_wait(TOPICS.deploy(FLEET, "detector"), b"", retain=True)
    op.close()
    client.close()
    return {
        "devices": len(names),
        "ok": ok,
        "seconds": round(elapsed, 3),
        # CPU of this (devices) process: N devices share 2 cores here, each has its own CPU
        # in a real fleet, so wall time grows with N x this per-device cost by construction.
        "device_cpu_s": round(cpu_s, 2),
        "device_cpu_ms_per_device": round(1000 * cpu_s / len(names), 1),
        # When the last device began downloading, began installing (transfer done), ended.
        "phases_s": {s: last(s) for s in ("downloading", "installing", "successful")},
        "server_frames": server_stats["frames"],
        "server_bytes": server_stats["bytes"],
        "server_skipped_recent": server_stats["skipped"],
        "server_cpu_s": server_stats["cpu_s"],
        "bundle_bytes": served.manifest.total_length,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["e2e", "fleet", "_server", "_rawpub"])
    parser.add_argument("--url", default="")
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=128 * 1024)
    parser.add_argument(
        "--install",
        choices=["real", "skip"],
        default="real",
        help="fleet: real installer, or delivery only (verify + transfer + file checks)",
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (default: temp)")
    args = parser.parse_args()
    configure(level="error")
    if args.mode == "_server":
        serve_process(args.url, args.bundle)
        return 0
    if args.mode == "_rawpub":
        raw_publisher(args.url, args.size, args.count, args.qos)
        return 0
    # tmpfs when there is one: device fsyncs measure the VM's disk, not the protocol.
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs on purpose; mkdtemp makes a private dir in it
    scratch = args.work or (shm if shm.is_dir() else None)
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir=scratch))
    broker = MosquittoBroker(work / "broker", extra_config=BROKER_EXTRA)
    broker.start()
    try:
        bundle = make_bundle(work, args.mb, args.chunk_size)
        size = args.chunk_size + HEADER_BYTES
        if args.mode == "e2e":
            count = max(64, int(args.mb * 1024 * 1024 / args.chunk_size))
            raw1 = raw_throughput(broker.url, size, count, qos=1)
            raw0 = raw_throughput(broker.url, size, count, qos=0)
            e2e = run_devices(broker.url, bundle, work / "keys", work / "e2e", ["dev-0"], 600)
            rate = e2e["bundle_bytes"] / e2e["seconds"]
            out = {
                "mode": "e2e",
                "mb": args.mb,
                "chunk_size": args.chunk_size,
                "window": WINDOW,
                "raw_qos1_mb_s": round(raw1 / 1e6, 1),
                "raw_qos0_mb_s": round(raw0 / 1e6, 1),
                "e2e_mb_s": round(rate / 1e6, 1),
                "share_of_raw_qos1": round(rate / raw1, 2),
                "share_of_raw_qos0": round(rate / raw0, 2),
                **e2e,
            }
        else:
            cls = DeliveryOnlyInstaller if args.install == "skip" else Installer
            keys = work / "keys"
            one = run_devices(broker.url, bundle, keys, work / "one", ["dev-0"], 600, cls)
            names = [f"dev-{i}" for i in range(args.devices)]
            many = run_devices(broker.url, bundle, keys, work / "many", names, 1800, cls)
            out = {
                "mode": "fleet",
                "install": args.install,
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
