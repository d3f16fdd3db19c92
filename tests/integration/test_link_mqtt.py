"""The link, outbox and publisher against a real Mosquitto: birth/will, reconnects, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config.uplink import MqttConfig, OutboxConfig
from agent.fleet.mqttclient import FleetClient
from agent.uplink.classes import MsgClass
from agent.uplink.link import Link
from agent.uplink.outbox import Outbox
from agent.uplink.publisher import Publisher
from agent.uplink.topics import Topics
from tests.integration.mqtt_helpers import Recorder
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker

TOPICS = Topics("ea/v1", "cam-001")


@dataclass
class Uplink:
    stop: threading.Event
    outbox: Outbox
    link: Link
    publisher: Publisher

    def close(self) -> None:
        self.stop.set()
        self.publisher.stop()
        self.outbox.stop()
        self.link.stop()


def start_uplink(url: str, state_dir: Path, protocol: str = "5", **mqtt: object) -> Uplink:
    stop = threading.Event()
    cfg = MqttConfig(url=url, protocol=protocol, reconnect_min_s=0.2, reconnect_max_s=0.5, **mqtt)
    outbox = Outbox(
        state_dir,
        OutboxConfig(batch_interval_s=0.05, drain_rate_per_s=500),
        TOPICS.detection_counts,
    )
    link = Link(cfg, TOPICS, state_dir, stop)
    publisher = Publisher(outbox, link)
    outbox.start()
    link.start()
    publisher.start()
    return Uplink(stop, outbox, link, publisher)


def put_detections(outbox: Outbox, seqs: range) -> None:
    for seq in seqs:
        outbox.put_json(TOPICS.detection, {"seq": seq, "camera": "door"}, MsgClass.DETECTION)


def seqs_on(recorder: Recorder) -> list[int]:
    return [json.loads(p)["seq"] for p in recorder.on(TOPICS.detection)]


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker that keeps sessions and queued QoS 1 messages across restarts."""
    data = tmp_path / "broker-data"
    data.mkdir()
    broker = MosquittoBroker(
        tmp_path / "broker",
        extra_config=["persistence true", f"persistence_location {data}/"],
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_birth_then_offline_on_clean_stop(
    mosquitto: MosquittoBroker, tmp_path: Path, protocol: str
) -> None:
    rec = Recorder(mosquitto.url, TOPICS.state)
    up = start_uplink(mosquitto.url, tmp_path / "state", protocol=protocol)
    try:
        assert up.link.wait_connected(10)
        assert rec.wait_for(lambda: len(rec.on(TOPICS.state)) >= 1)
        birth = json.loads(rec.on(TOPICS.state)[0])
        assert birth["online"] is True
        assert birth["session"] == up.link.session >= 1
    finally:
        up.close()
    assert rec.wait_for(lambda: len(rec.on(TOPICS.state)) >= 2)
    offline = json.loads(rec.on(TOPICS.state)[-1])
    assert offline.pop("ts") >= birth["ts"]  # a clean stop says when
    assert offline == {"online": False, "session": birth["session"], "fleet": "default"}
    rec.close()


AGENT_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from agent import log
    from agent.config.uplink import MqttConfig, OutboxConfig
    from agent.uplink.classes import MsgClass
    from agent.uplink.link import Link
    from agent.uplink.outbox import Outbox
    from agent.uplink.topics import Topics

    log.configure(level="warning")  # logs to stderr; stdout carries the handshake line
    url, state_dir, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    topics = Topics("ea/v1", "cam-001")
    stop = threading.Event()
    outbox = Outbox(state_dir, OutboxConfig(fsync="always"), topics.detection_counts)
    outbox.start()
    broker = url if url != "none" else "mqtt://127.0.0.1:1"
    link = Link(MqttConfig(url=broker), topics, state_dir, stop)
    if url != "none":
        link.start()
        link.wait_connected(10)
    for seq in range(count):
        outbox.put_json(topics.detection, {"seq": seq}, MsgClass.DETECTION)
    assert outbox.flush(10)
    print("accepted", link.session, flush=True)
    time.sleep(60)
    """
)


def spawn_agent(url: str, state_dir: Path, count: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT_SCRIPT, url, str(state_dir), str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("accepted"), line
    return proc, line


def test_last_will_after_sigkill(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    rec = Recorder(mosquitto.url, TOPICS.state)
    proc, line = spawn_agent(mosquitto.url, tmp_path / "state", 0)
    session = int(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert rec.wait_for(lambda: any(not json.loads(p)["online"] for p in rec.on(TOPICS.state)))
    will = json.loads(rec.on(TOPICS.state)[-1])
    assert will == {"online": False, "session": session, "fleet": "default"}
    rec.close()


def test_outbox_survives_sigkill_and_delivers_after_restart(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    # The agent has no broker at all: everything it accepts stays in its outbox.
    proc, _ = spawn_agent("none", state, 200)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rec = Recorder(mosquitto.url, TOPICS.detection)
    up = start_uplink(mosquitto.url, state)
    try:
        assert rec.wait_for(lambda: len(set(seqs_on(rec))) == 200, timeout_s=20)
        assert seqs_on(rec)[:200] == list(range(200))  # in order within the class
        assert up.outbox.store.snapshot()["depth"] == 0 or rec.wait_for(
            lambda: up.outbox.store.snapshot()["depth"] == 0
        )
    finally:
        up.close()
        rec.close()


def test_broker_restarts_lose_no_qos1_event(
    durable_broker: MosquittoBroker, tmp_path: Path
) -> None:
    rec_id = "durable-recorder"
    recorders = [Recorder(durable_broker.url, TOPICS.detection, client_id=rec_id, clean=False)]
    up = start_uplink(durable_broker.url, tmp_path / "state")

    def seen() -> set[int]:
        return {seq for rec in recorders for seq in seqs_on(rec)}

    total = 0
    try:
        assert up.link.wait_connected(10)
        for _ in range(2):
            put_detections(up.outbox, range(total, total + 50))
            total += 50
            time.sleep(0.2)
            recorders[-1].close()
            durable_broker.restart()
            put_detections(up.outbox, range(total, total + 50))  # while the link is down
            total += 50
            recorders.append(
                Recorder(durable_broker.url, TOPICS.detection, client_id=rec_id, clean=False)
            )
        put_detections(up.outbox, range(total, total + 50))
        total += 50
        assert recorders[-1].wait_for(lambda: seen() >= set(range(total)), timeout_s=30), (
            sorted(set(range(total)) - seen())[:20],
            up.outbox.snapshot(),
        )
        assert up.link.attempts >= 3
    finally:
        up.close()
        recorders[-1].close()


def test_unsubscribe_stops_delivery_locally_and_at_the_broker(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    stop = threading.Event()
    cfg = MqttConfig(url=mosquitto.url, reconnect_min_s=0.2, reconnect_max_s=0.5)
    link = Link(cfg, TOPICS, tmp_path, stop)
    got: list[str] = []
    raw: list[str] = []  # what the broker sent this client, before any local filtering
    link.subscribe("test/stream/+", lambda topic, _payload: got.append(topic))
    link.start()
    sender = Recorder(mosquitto.url, "ignored/#", client_id="sender")

    def wait(predicate, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not predicate():
            time.sleep(0.02)
        return predicate()

    try:
        assert link.wait_connected(10)
        client = link._client
        assert client is not None
        original = client.on_message

        def spy(c, u, msg) -> None:
            raw.append(msg.topic)
            original(c, u, msg)

        client.on_message = spy
        time.sleep(0.3)  # SUBACK
        sender.client.publish("test/stream/a", b"1", qos=1).wait_for_publish(5)
        assert wait(lambda: got == ["test/stream/a"])
        link.unsubscribe("test/stream/+")
        assert "test/stream/+" not in link._unsubs  # sent at once while connected
        time.sleep(0.3)  # UNSUBACK
        sender.client.publish("test/stream/b", b"2", qos=1).wait_for_publish(5)
        time.sleep(0.5)
        assert got == ["test/stream/a"]
        assert raw == ["test/stream/a"]  # the broker no longer sends it at all
        # While down, an unsubscribe waits for the next connect; a re-subscribe cancels it.
        mosquitto.stop()
        assert wait(lambda: not link.connected)
        link.unsubscribe("test/down")
        assert "test/down" in link._unsubs
        link.subscribe("test/again", lambda topic, _payload: got.append(topic))
        link.unsubscribe("test/again")
        link.subscribe("test/again", lambda topic, _payload: got.append(topic))
        assert "test/again" not in link._unsubs
        mosquitto.start()
        assert link.wait_connected(10)
        assert wait(lambda: not link._unsubs)
    finally:
        stop.set()
        link.stop()
        sender.close()


def test_device_link_and_fleet_client_sockets_send_small_packets_at_once(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Nagle off: a PUBACK or a chunk request must not wait for the broker's delayed ACK."""
    up = start_uplink(mosquitto.url, tmp_path / "state")
    fleet = FleetClient(mosquitto.url).connect()
    try:
        assert up.link.wait_connected(10)
        clients = [up.link._client, fleet._client]
        for client in clients:
            assert client is not None
            sock = client.socket()
            assert isinstance(sock, socket.socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        fleet.close()
        up.close()
