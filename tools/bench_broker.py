"""Raw broker figures for the delivery benchmarks: throughput and fan-out CPU per byte.

``raw_throughput``: one publisher process -> Mosquitto -> one subscriber (this process),
for a message size and QoS, with Nagle on or off on both clients' sockets.
``broker_fanout_cpu``: Mosquitto's own CPU seconds per byte per subscriber (/proc).

Run as a script only by those functions: ``python tools/bench_broker.py --url ... --size N
--count N --qos Q [--topic T] [--nagle]`` is the publisher process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.fleet.mqttclient import FleetClient  # noqa: E402 - after sys.path
from agent.log import configure  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402


def raw_publisher(
    url: str, size: int, count: int, qos: int, topic: str, *, no_delay: bool = True
) -> None:
    """The sending side of the raw figure (own process): ``count`` messages of ``size`` bytes."""
    pub = FleetClient(url, no_delay=no_delay).connect()
    payload = os.urandom(size)
    window = 16  # the in-flight bound of the previous figures (QoS 1)
    infos = []
    for _ in range(count):
        infos.append(pub.publish(topic, payload, qos=qos))
        if qos and len(infos) >= window:
            infos.pop(0).wait_for_publish(10)
    for info in infos:
        info.wait_for_publish(10)
    time.sleep(0.5)
    pub.close()


def raw_throughput(url: str, size: int, count: int, qos: int, *, no_delay: bool = True) -> float:
    """Bytes/s from a publisher process through the broker to a subscriber in this process.

    ``no_delay``: Nagle off on both clients' sockets (as the agent's clients run), or on.
    """
    got = threading.Event()
    times: list[float] = []

    def on_message(_topic: str, _payload: bytes) -> None:
        times.append(time.perf_counter())
        if len(times) >= count:
            got.set()

    sub = FleetClient(url, no_delay=no_delay).connect()
    sub.subscribe("bench/raw", on_message)
    time.sleep(0.3)
    cmd = [sys.executable, __file__, "--url", url, "--size", str(size)]
    if not no_delay:
        cmd.append("--nagle")
    proc = subprocess.Popen([*cmd, "--count", str(count), "--qos", str(qos)])
    got.wait(120)
    proc.wait(60)
    sub.close()
    if len(times) < 2:
        return 0.0
    # First to last arrival: excludes the publisher's start-up; QoS 0 losses count as lost.
    return size * (len(times) - 1) / (times[-1] - times[0])


def broker_fanout_cpu(broker: MosquittoBroker, size: int, count: int, subscribers: int) -> float:
    """Broker CPU seconds per byte per subscriber: one publisher, ``subscribers`` receivers.

    Measured from Mosquitto's own CPU time (/proc), so slow Python receivers do not count;
    the one copy it receives is included (a slight overestimate of the per-copy cost).
    """
    received = [0] * subscribers
    done = threading.Event()
    lock = threading.Lock()

    def receiver(n: int) -> Callable[[str, bytes], None]:
        def on_message(_topic: str, _payload: bytes) -> None:
            with lock:
                received[n] += 1
                if min(received) >= count:
                    done.set()

        return on_message

    subs = [FleetClient(broker.url).connect() for _ in range(subscribers)]
    for n, sub in enumerate(subs):
        sub.subscribe("bench/fanout", receiver(n))
    time.sleep(0.3)
    pid = broker.process.pid if broker.process is not None else None
    before = process_cpu_s(pid)
    cmd = [sys.executable, __file__, "--url", broker.url, "--size", str(size)]
    proc = subprocess.Popen([*cmd, "--count", str(count), "--qos", "0", "--topic", "bench/fanout"])
    done.wait(120)
    proc.wait(60)
    after = process_cpu_s(pid)
    for sub in subs:
        sub.close()
    copies = sum(received)
    if before is None or after is None or copies == 0:
        return 0.0
    return (after - before) / (size * copies)


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description="the publisher process of the raw figures")
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--topic", default="bench/raw")
    parser.add_argument("--nagle", action="store_true", help="leave Nagle on")
    args = parser.parse_args()
    configure(level="error")  # stdout belongs to the parent's one JSON object
    raw_publisher(args.url, args.size, args.count, args.qos, args.topic, no_delay=not args.nagle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
