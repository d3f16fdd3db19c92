"""The raw fan-out baseline of ``tools/bench_transfer.py fleet`` (issue 19, item 3).

N plain subscriber processes, one MQTT connection each, receive the same bundle bytes
through the same broker as the rollout; each hashes them (SHA-256) and writes them to
disk, as a device must at the least. Publish start to the last subscriber's last byte is
``raw_fanout_s``: what the broker and this machine can do for N receivers at all, the
baseline the real rollout's wall time is divided by.

``broker_bytes_out`` reads the broker's ``wchar`` from /proc (bytes it wrote to its
sockets, and its few log lines): the same figure for both runs, not an estimate.

Run as a script only by ``raw_fanout``: ``python tools/bench_transfer_fanout.py --url U
--topic T --expect N --out PATH`` is one subscriber process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_transfer_threads import (  # noqa: E402 - tools/ sibling
    add_counts,
    add_up,
    count_paho,
    counts_since,
    delta,
    paho_counts,
    snapshot,
)

from agent.fleet.mqttclient import FleetClient  # noqa: E402 - after sys.path
from agent.log import configure  # noqa: E402

TOPIC = "bench/fanout/bundle"
IN_FLIGHT = 16  # QoS 1 publishes awaiting PUBACK, as tools/bench_broker.py


def broker_bytes_out(pid: int | None) -> int | None:
    """Bytes the broker process has written so far (/proc/PID/io ``wchar``)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/io").read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(":")
            if key == "wchar":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def subscriber(url: str, topic: str, expect: int, out: Path, timeout_s: float) -> None:
    """One plain receiver: every byte hashed and written; one JSON line at the end."""
    done = threading.Event()
    digest = hashlib.sha256()
    got = 0
    first_s = 0.0
    last_s = 0.0
    with out.open("wb") as sink:

        def on_message(_topic: str, payload: bytes) -> None:
            nonlocal got, first_s, last_s
            if not first_s:
                first_s = time.monotonic()
            digest.update(payload)
            sink.write(payload)
            got += len(payload)
            if got >= expect:
                sink.flush()
                last_s = time.monotonic()
                done.set()

        client = FleetClient(url).connect()
        client.subscribe(topic, on_message)
        time.sleep(0.3)  # SUBACK in
        cpu_start = time.process_time()
        threads_start, counts_start = snapshot(), paho_counts()
        print("ready", flush=True)
        done.wait(timeout_s)
        cpu_s = time.process_time() - cpu_start
        threads = delta(threads_start, snapshot())
        counts = counts_since(counts_start)
        doc = {"bytes": got, "sha256": digest.hexdigest(), "first_s": first_s, "done_s": last_s}
        doc.update(threads=threads, paho=counts)
        print(json.dumps({**doc, "cpu_s": round(cpu_s, 3)}), flush=True)
        # Disconnect and exit only once every receiver has reported (stdin closed), as the
        # rollout's device processes: no teardown runs while others still receive.
        sys.stdin.read()
        client.close()


def release(procs: list[subprocess.Popen[str]], timeout_s: float) -> None:
    """Let processes that have reported stop and exit (they wait for their stdin to close)."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        proc.wait(timeout=timeout_s)


def raw_fanout(
    url: str, payload: Path, work: Path, *, count: int, chunk_size: int, broker_pid: int | None
) -> dict[str, Any]:
    """``count`` subscriber processes take ``payload`` in ``chunk_size`` messages (QoS 1)."""
    data = payload.read_bytes()
    work.mkdir(parents=True, exist_ok=True)
    procs = []
    for n in range(count):
        cmd = [sys.executable, __file__, "--url", url, "--topic", TOPIC]
        cmd += ["--expect", str(len(data)), "--out", str(work / f"sub-{n}.bin")]
        procs.append(
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a subscriber process did not start")
    pub = FleetClient(url).connect()
    bytes_before = broker_bytes_out(broker_pid)
    start = time.monotonic()
    infos = []
    for offset in range(0, len(data), chunk_size):
        infos.append(pub.publish(TOPIC, data[offset : offset + chunk_size], qos=1))
        if len(infos) >= IN_FLIGHT:
            infos.pop(0).wait_for_publish(30)
    for info in infos:
        info.wait_for_publish(30)
    reports = []
    for proc in procs:
        assert proc.stdout is not None
        reports.append(json.loads(proc.stdout.readline()))
    release(procs, 600)
    bytes_after = broker_bytes_out(broker_pid)
    pub.close()
    want = hashlib.sha256(data).hexdigest()
    ok = [r for r in reports if r["bytes"] == len(data) and r["sha256"] == want]
    done = [r["done_s"] for r in ok]
    return {
        "subscribers": count,
        "ok": len(ok),
        "seconds": round(max(done) - start, 3) if len(ok) == count else None,
        "bytes": len(data),
        "messages": (len(data) + chunk_size - 1) // chunk_size,
        "broker_bytes_out": (
            bytes_after - bytes_before
            if bytes_before is not None and bytes_after is not None
            else None
        ),
        "subscriber_cpu_s": round(sum(r["cpu_s"] for r in reports), 2),
        # Per receiver, by thread (tools/bench_transfer_threads.py).
        "threads_per_receiver": add_up([r.get("threads", {}) for r in reports], count),
        "paho_per_receiver": add_counts([r.get("paho", {}) for r in reports], count),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="one raw fan-out subscriber process")
    parser.add_argument("--url", required=True)
    parser.add_argument("--topic", default=TOPIC)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    configure(level="error")
    count_paho()
    subscriber(args.url, args.topic, args.expect, args.out, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
