"""Chunk servers that scale out (issue 19 item 4): ``edge-fleet serve --share-group`` x 2.

Two real ``edge-fleet serve`` processes share one fleet's chunk requests through an MQTT 5
shared subscription on a real Mosquitto; three devices (real link, update service and
installer) take a bundle of many small chunks. The broker's own log says which server
each request went to; one server hangs (SIGSTOP) and is killed (SIGKILL) mid-rollout,
and the rollout must still complete, with no device asking again for more than its one
window in flight.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.assets import find_asset
from agent.fleet.cli import build_parser
from agent.fleet.cli import main as fleet_main
from agent.fleet.keys import init_keys
from agent.fleet.mqttclient import FleetClient, route_of
from agent.update.transfer.wire import decode_request
from tests.integration.test_delivery import TOPICS, Operator, make_bundle, publish, start_device
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker

WINDOW = 4
GROUP = "servers"
# Mosquitto (log_type debug) names the client each request is handed to.
SENT_TO = re.compile(r"Sending PUBLISH to (\S+) \(.*'[^']*/xfer/[^']*/req'")


def serve_process(url: str, bundle: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "agent.fleet", "serve", str(bundle), "--broker", url]
    return subprocess.Popen([*cmd, "--share-group", GROUP], text=True)


def request_counts(log: Path, pids: dict[int, str]) -> Counter[str]:
    """Requests the broker handed to each server, by name ("a", "b"), from its log."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        match = SENT_TO.search(line)
        if match:
            pid = int(match.group(1).split("-")[2])  # edge-fleet-<pid>-<n>
            counts[pids.get(pid, "other")] += 1
    return counts


def test_shared_subscription_route_is_the_plain_filter() -> None:
    assert route_of("$share/g/ea/v1/d/+/xfer/x/req") == "ea/v1/d/+/xfer/x/req"
    assert route_of("ea/v1/d/+/xfer/x/req") == "ea/v1/d/+/xfer/x/req"


def test_serve_publish_and_rollout_parse_without_a_share_group() -> None:
    for command in ("serve", "publish", "rollout"):
        argv = [command, "bundle", "--broker", "mqtt://127.0.0.1:1", "--keys", "k"]
        args = build_parser(argv).parse_args(argv if command == "rollout" else argv[:-2])
        assert not args.share_group  # no group: a plain subscription, as before


def test_bad_share_group_is_refused_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fleet_main(["serve", ".", "--broker", "mqtt://127.0.0.1:1", "--share-group", "a/b"])
    assert exit_info.value.code == 2
    assert "share group name" in capsys.readouterr().err


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_two_servers_split_requests_and_one_dies_mid_rollout(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "broker", extra_config=["log_type debug"])
    broker.start()
    log = broker.workdir / "mosquitto.log"
    keys = tmp_path / "keys"
    init_keys(keys)
    model = find_asset("models/face_detection_full_range.tflite")
    assert model is not None
    # 265 chunks of 4 KiB taken 4 at a time: many requests, long enough to kill a server.
    bundle = make_bundle(keys, tmp_path / "bundle", model, 1, chunk_size=4096)
    total_chunks = -(-model.stat().st_size // 4096)
    servers = {"a": serve_process(broker.url, bundle), "b": serve_process(broker.url, bundle)}
    pids = {proc.pid: name for name, proc in servers.items()}
    op = Operator(FleetClient(broker.url).connect())
    op.client.subscribe(TOPICS.model_update_filter(), op.on_state)
    asked: dict[str, Counter[tuple[int, int]]] = {}
    requests = 0
    lock = threading.Lock()

    def on_request(topic: str, payload: bytes) -> None:
        nonlocal requests
        device = TOPICS.device_of(topic) or "?"
        with lock:
            requests += 1
            asked.setdefault(device, Counter()).update(decode_request(payload).chunks)

    op.client.subscribe(TOPICS.request_filter(), on_request)  # an observer, not in the group
    names = [f"cam-{n}" for n in range(3)]
    devices = [start_device(broker, keys, tmp_path / name, name, window=WINDOW) for name in names]
    try:
        wait_until(
            lambda: all(
                f"Received SUBSCRIBE from edge-fleet-{pid}-" in log.read_text() for pid in pids
            ),
            20,
            "both servers subscribed",
        )
        dep = publish(op, bundle)
        wait_until(
            lambda: min(request_counts(log, pids)[n] for n in ("a", "b")) >= 3,
            20,
            "both servers were handed requests",
        )
        # Server a hangs first (the broker still hands it requests it will never answer),
        # then dies: what it was handed is lost, and the devices must ask the survivor.
        servers["a"].send_signal(signal.SIGSTOP)
        hung_at = request_counts(log, pids)["a"]
        wait_until(lambda: request_counts(log, pids)["a"] >= hung_at + 2, 20, "a handed more")
        servers["a"].send_signal(signal.SIGKILL)
        servers["a"].wait(5)
        before_kill = request_counts(log, pids)
        with lock:
            chunks_asked = sum(len(c) for c in asked.values())
        assert chunks_asked < total_chunks * len(names), "the rollout ended before the kill"
        finals = [op.wait_terminal(name, dep, timeout_s=60) for name in names]
        assert [f["status"] for f in finals] == ["successful"] * len(names), finals
        # Each request went to exactly one of the two servers (a plain subscription each
        # would hand every request to both).
        wait_until(
            lambda: request_counts(log, pids)["a"] + request_counts(log, pids)["b"] == requests,
            5,
            "each request handed to one server",
        )
        after = request_counts(log, pids)
        print(f"requests {requests}: before the kill {dict(before_kill)}, after {dict(after)}")
        # Both servers took requests; after the kill only the survivor did.
        assert after["a"] == before_kill["a"]
        assert after["b"] > before_kill["b"]
        with lock:
            refetched = {d: sum(n - 1 for n in c.values() if n > 1) for d, c in asked.items()}
        # A device asks again only for what the dead server had not sent: one window at most.
        print(f"chunks asked again per device: {refetched}")
        assert all(n <= WINDOW for n in refetched.values()), refetched
    finally:
        for device in devices:
            device.close()
        for proc in servers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
        op.client.close()
        broker.stop()
