"""Update delivery benchmarks against a local Mosquitto (figures go to docs/benchmarks.md).

  e2e    a model of --mb MB end to end (transfer, verify, stage, activate) through the real
         UpdateService and Installer, against raw broker throughput for the same message size
         (QoS 1 publish -> subscribe) measured in the same run.
  fleet  --devices simulated devices (real UpdateService, Installer and transfer code; one
         process and MQTT connection each unless --procs groups them, devices of one process
         then sharing a connection) taking one --mb MB rollout. Measured in the same run
         first: the raw fan-out (tools/bench_transfer_fanout.py), as many plain subscriber
         processes taking the same bytes through the same broker (SHA-256, written to
         disk): ``fanout_ratio`` = rollout wall time / ``raw_fanout_s``,
         ``egress_per_bundle`` = server bytes out / bundle, ``broker_bytes_out`` of both.
         Also, against one device in the same harness, each labelled: (a) the wall-time
         ratio, (b) the server side (when it published its last chunk, bytes sent vs the
         bundle), (c) device CPU seconds per device as measured, (d) a projection for
         devices with a CPU each (computed from (a)-(c), never reported as measured).

The trial step is replaced by an always-passing probe: a random payload is not a model,
and the trial is not part of what is measured here.

Usage: python tools/bench_transfer.py e2e --mb 50
       python tools/bench_transfer.py fleet --devices 100 --mb 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_broker import broker_fanout_cpu, process_cpu_s, raw_throughput  # noqa: E402 - sibling
from bench_transfer_fanout import broker_bytes_out, raw_fanout, release  # noqa: E402 - sibling
from bench_transfer_figures import (  # noqa: E402 - tools/ sibling
    arrivals,
    cpu_by_phase,
    fanout_figures,
    fleet_figures,
    phases,
)
from bench_transfer_sim import (  # noqa: E402 - tools/ sibling
    TERMINAL,
    DeviceGroup,
    device_process,
    make_bundle,
)
from bench_transfer_threads import add_counts, add_up  # noqa: E402 - tools/ sibling

from agent.fleet.chunkserver import ChunkServer  # noqa: E402
from agent.fleet.mqttclient import FleetClient  # noqa: E402
from agent.fleet.served import load_bundle  # noqa: E402
from agent.fleet.startwait import MAX_S, QUIET_S  # noqa: E402
from agent.log import configure  # noqa: E402
from agent.update.transfer.wire import HEADER_BYTES, Topics  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402

TOPICS = Topics("ea/v1")
FLEET = "bench"
WINDOW = int(os.environ.get("BENCH_WINDOW", "32"))
START_WAIT: dict[str, float | None] = {}  # --start-quiet-s / --start-wait-s, as given
# Nagle off on the broker's sockets (docs/protocol.md, "Broker settings"); ";"-separated lines.
BROKER_EXTRA = [
    line for line in os.environ.get("BENCH_BROKER", "set_tcp_nodelay true").split(";") if line
]


class ServerProcess:
    """The chunk server in its own process, as on a real operator machine."""

    def __init__(self, url: str, bundle: Path, devices: int) -> None:
        cmd = [sys.executable, __file__, "_server", "--url", url, "--bundle", str(bundle)]
        cmd += ["--count", str(devices)]  # the targeted devices, as publish knows them
        cmd += [f"--start-{k}-s={v}" for k, v in START_WAIT.items() if v is not None]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("chunk server process did not start")

    def finish(self) -> dict[str, Any]:
        out, _ = self.proc.communicate("", timeout=60)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def serve_process(url: str, bundle: Path, devices: int) -> None:
    client = FleetClient(url).connect()
    stop = threading.Event()
    # As `edge-fleet publish` runs it: the targeted devices are known (the start wait).
    expect = [f"dev-{i}" for i in range(devices)]
    served = load_bundle(bundle)
    quiet, cap = START_WAIT.get("quiet"), START_WAIT.get("wait")
    server = ChunkServer(
        client,
        TOPICS,
        [served],
        stop,
        expect_devices=expect,
        start_quiet_s=QUIET_S if quiet is None else quiet,
        start_wait_s=MAX_S if cap is None else cap,
    )
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
        "requests": stats.requests,
        "acks": getattr(stats, "acks", None),  # None: a chunk server before the count (A/B runs)
        "bytes": stats.bytes,
        "skipped": stats.skipped_recent,
        "resent": stats.resent,
        "held": stats.held,
        "last_chunk_s": stats.last_chunk_s,  # time.monotonic(): one clock for all processes
        "cpu_s": round(time.process_time() - cpu_start, 2),
        "start": arrivals(server.first_asks(served.deployment_id), stats.start_held_s),
    }
    print(json.dumps(doc))


def run_devices(url: str, bundle: Path, work: Path, names: list[str]) -> dict[str, Any]:
    """e2e: the devices in this process (one connection), the chunk server in its own."""
    group = DeviceGroup(
        url,
        TOPICS,
        work / "e2e",
        names,
        keys=work / "keys",
        fleet=FLEET,
        install="real",
        window=WINDOW,
    )
    time.sleep(0.5)
    op = FleetClient(url).connect()
    served = load_bundle(bundle)
    server = ServerProcess(url, bundle, len(names))
    start = time.monotonic()
    cpu_start = time.process_time()
    op.publish_wait(TOPICS.deploy(FLEET, "detector"), served.envelope_bytes, retain=True)
    group.wait(600)
    cpu_s = time.process_time() - cpu_start
    devices = group.report()
    # Publish -> the device's terminal op state, as the fleet run measures (the raw run ends
    # at its receiver's last byte, not when a waiting loop notices it).
    elapsed = phases(devices, start)["done"] or time.monotonic() - start
    group.close()
    server_stats = server.finish()
    op.publish_wait(TOPICS.deploy(FLEET, "detector"), b"", retain=True)
    op.close()
    return {
        "devices": len(names),
        "ok": sum(1 for d in devices if d["status"] == "successful"),
        "seconds": round(elapsed, 3),
        "device_cpu_s": round(cpu_s, 2),
        # When the last device began downloading, began installing (transfer done), ended.
        "phases_s": phases(devices, start),
        "server_frames": server_stats["frames"],
        "server_bytes": server_stats["bytes"],
        "server_cpu_s": server_stats["cpu_s"],
        "bundle_bytes": served.manifest.total_length,
    }


class DeviceProcesses:
    """``count`` devices spread over ``procs`` processes (``_devices`` mode), all ready."""

    def __init__(
        self, url: str, keys: Path, work: Path, *, count: int, procs: int, install: str
    ) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        share, extra = divmod(count, procs)
        first = 0
        for n in range(procs):
            size = share + (1 if n < extra else 0)
            if size == 0:
                continue
            cmd = [sys.executable, __file__, "_devices", "--url", url, "--keys", str(keys)]
            cmd += ["--work", str(work), "--first", str(first), "--count", str(size)]
            cmd += ["--install", install, "--window", str(WINDOW), "--fleet", FLEET]
            self.procs.append(
                subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
            first += size
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a device process did not start")

    def finish(self, timeout_s: float) -> tuple[list[dict[str, Any]], float]:
        """Every device's report and the processes' CPU seconds (summed)."""
        devices: list[dict[str, Any]] = []
        cpu_s = 0.0
        self.threads: list[dict[str, dict[str, int]]] = []
        self.paho: list[dict[str, int]] = []
        self.cpu_starts: list[float] = []  # each device's process CPU at "ready"
        docs = [_report_line(proc) for proc in self.procs]
        release(self.procs, timeout_s)  # every report in: now they may stop and exit
        for doc in docs:
            devices += doc["devices"]
            self.cpu_starts += [doc.get("cpu_start", 0.0)] * len(doc["devices"])
            cpu_s += doc["cpu_s"]
            self.threads.append(doc.get("threads", {}))
            self.paho.append(doc.get("paho", {}))
        return devices, cpu_s


def _report_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """A device process's one JSON line, printed when its devices are done (it then waits)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a device process ended without a report (rc {proc.wait()})")
    doc: dict[str, Any] = json.loads(line)
    return doc


def broker_drops(broker: MosquittoBroker) -> int:
    """Mosquitto's "being dropped" log lines so far: a client's queue past its limit
    (``max_queued_messages``) drops QoS 0 messages, e.g. chunks to a device far behind."""
    try:
        text = (broker.workdir / "mosquitto.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return text.count("Outgoing messages are being dropped")


def run_fleet(
    broker: MosquittoBroker, bundle: Path, work: Path, *, count: int, procs: int, install: str
) -> dict[str, Any]:
    url = broker.url
    drops_before = broker_drops(broker)
    keys = work.parent / "keys"
    group = DeviceProcesses(url, keys, work, count=count, procs=procs, install=install)
    op = FleetClient(url).connect()
    served = load_bundle(bundle)
    server = ServerProcess(url, bundle, count)
    pid = broker.process.pid if broker.process is not None else None
    broker_cpu_start = process_cpu_s(pid)
    broker_out_start = broker_bytes_out(pid)
    start = time.monotonic()
    op.publish_wait(TOPICS.deploy(FLEET, "detector"), served.envelope_bytes, retain=True)
    devices, cpu_s = group.finish(timeout_s=1800)
    broker_cpu_end = process_cpu_s(pid)
    stats = server.finish()
    op.publish_wait(TOPICS.deploy(FLEET, "detector"), b"", retain=True)
    op.close()
    broker_out_end = broker_bytes_out(pid)
    drops = broker_drops(broker) - drops_before
    spans = phases(devices, start)
    done = sorted(
        min(d["phases"][s] for s in TERMINAL if s in d["phases"]) - start
        for d in devices
        if any(s in d["phases"] for s in TERMINAL)
    )
    installs = [
        min(d["phases"][s] for s in TERMINAL if s in d["phases"]) - d["phases"]["installing"]
        for d in devices
        if "installing" in d["phases"] and any(s in d["phases"] for s in TERMINAL)
    ]
    return {
        "devices": count,
        "procs": len(group.procs),
        "ok": sum(1 for d in devices if d["status"] == "successful"),
        # (a) manifest publish -> the last device's terminal op state.
        "seconds": spans["done"],
        "device_done_s_median": round(done[len(done) // 2], 3) if done else None,
        "phases_s": spans,
        "install_s_median": round(sorted(installs)[len(installs) // 2], 3) if installs else None,
        # (b) the server side.
        "server_last_chunk_s": round(stats["last_chunk_s"] - start, 3),
        "server_frames": stats["frames"],
        "server_requests": stats["requests"],  # chunk and index requests from all devices
        "server_acks": stats["acks"],  # one per batch, read by every device
        # Clients whose broker queue overflowed (each episode logged once by Mosquitto).
        "broker_drop_episodes": drops,
        "server_resent_frames": stats["resent"],
        "server_held": stats["held"],
        "server_skipped_recent": stats["skipped"],
        "server_bytes": stats["bytes"],
        "server_cpu_s": stats["cpu_s"],
        "server_start_wait": stats["start"],
        "bundle_bytes": served.manifest.total_length,
        # Mosquitto sends each stream frame once per connection (one per device process).
        "broker_cpu_s": (
            round(broker_cpu_end - broker_cpu_start, 2)
            if broker_cpu_start is not None and broker_cpu_end is not None
            else None
        ),
        "broker_bytes_out": (
            broker_out_end - broker_out_start
            if broker_out_start is not None and broker_out_end is not None
            else None
        ),
        # (c) CPU of the device processes (devices, their shared MQTT thread and fan-out).
        "device_cpu_s": round(cpu_s, 2),
        "device_cpu_ms_per_device": round(1000 * cpu_s / count, 1),
        # Per device, by thread (tools/bench_transfer_threads.py).
        "threads_per_device": add_up(group.threads, count),
        # Median CPU per phase, one device per process (--procs 1 mixes devices: ignore it).
        "cpu_ms_by_phase": cpu_by_phase(devices, group.cpu_starts),
        "paho_per_device": add_counts(group.paho, count),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["e2e", "fleet", "_server", "_devices"])
    parser.add_argument("--url", default="")
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument(
        "--procs",
        type=int,
        default=0,
        help="fleet: processes the simulated devices are spread over (default: one per device)",
    )
    parser.add_argument("--chunk-size", type=int, default=128 * 1024)
    parser.add_argument(
        "--install",
        choices=["real", "skip"],
        default="real",
        help="fleet: real installer, or delivery only (verify + transfer + file checks)",
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (default: temp)")
    # Output is one JSON object either way; the flag is the spelling issue 19 and the docs use.
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (default)")
    # _devices (internal): one process of simulated devices.
    parser.add_argument("--keys", type=Path, default=None)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--fleet", default=FLEET)
    parser.add_argument("--timeout", type=float, default=1800.0)
    # The chunk server's start wait (agent/fleet/startwait.py); default: the server's own.
    parser.add_argument("--start-quiet-s", type=float, default=None)
    parser.add_argument("--start-wait-s", type=float, default=None)
    args = parser.parse_args()
    START_WAIT.update(quiet=args.start_quiet_s, wait=args.start_wait_s)
    configure(level="error")
    if args.mode == "_server":
        serve_process(args.url, args.bundle, args.count)
        return 0
    if args.mode == "_devices":
        device_process(args)
        return 0
    # tmpfs when there is one: device fsyncs measure the VM's disk, not the protocol.
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs on purpose; mkdtemp makes a private dir in it
    scratch = args.work or (shm if shm.is_dir() else None)
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir=scratch))
    broker = MosquittoBroker(work / "broker", extra_config=BROKER_EXTRA)
    broker.start()
    load_start = os.getloadavg()[0]
    try:
        bundle = make_bundle(work, args.mb, args.chunk_size, FLEET)
        size = args.chunk_size + HEADER_BYTES
        if args.mode == "e2e":
            count = max(64, int(args.mb * 1024 * 1024 / args.chunk_size))
            # The denominator is the faster of the two socket settings, per QoS.
            raws = {
                (qos, nagle): raw_throughput(broker.url, size, count, qos=qos, no_delay=not nagle)
                for qos in (1, 0)
                for nagle in (False, True)
            }
            raw1 = max(raws[1, False], raws[1, True])
            raw0 = max(raws[0, False], raws[0, True])
            e2e = run_devices(broker.url, bundle, work, ["dev-0"])
            rate = e2e["bundle_bytes"] / e2e["seconds"]
            out = {
                "mode": "e2e",
                "mb": args.mb,
                "chunk_size": args.chunk_size,
                "window": WINDOW,
                "raw_qos1_mb_s": round(raw1 / 1e6, 1),
                "raw_qos0_mb_s": round(raw0 / 1e6, 1),
                "raw_mb_s_by_socket": {
                    f"qos{qos}_{'nagle_on' if nagle else 'nodelay'}": round(value / 1e6, 1)
                    for (qos, nagle), value in raws.items()
                },
                "e2e_mb_s": round(rate / 1e6, 1),
                "share_of_raw_qos1": round(rate / raw1, 2),
                "share_of_raw_qos0": round(rate / raw0, 2),
                **e2e,
            }
        else:
            pid = broker.process.pid if broker.process is not None else None
            # (a) the raw fan-out to as many receivers, each its own process and connection.
            raw = raw_fanout(
                broker.url,
                work / "model.tflite",  # the bundle's one file, byte for byte
                work / "raw",
                count=args.devices,
                chunk_size=args.chunk_size,
                broker_pid=pid,
            )
            one = run_fleet(broker, bundle, work / "one", count=1, procs=1, install=args.install)
            # (b) the real rollout: one update service per process unless --procs says fewer.
            many = run_fleet(
                broker,
                bundle,
                work / "many",
                count=args.devices,
                procs=args.procs or args.devices,
                install=args.install,
            )
            # Enough copies (>= 128 MiB) for the broker's CPU ticks (10 ms) to resolve it.
            fanout = broker_fanout_cpu(broker, size, 256, subscribers=4)
            out = {
                "mode": "fleet",
                "install": args.install,
                "mb": args.mb,
                "cpus": os.cpu_count(),
                **fanout_figures(raw, many),
                **fleet_figures(one, many, fanout),
                "raw": raw,
                "one": one,
                "many": many,
            }
        out["loadavg_1m"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps(out))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
