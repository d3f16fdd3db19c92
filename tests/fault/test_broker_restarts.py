"""Broker fault: a real Mosquitto restarted again and again while detections flow.

The device side is the real uplink (SQLite outbox, link, publisher). The broker keeps
sessions across restarts (persistence on), and a subscriber with a persistent session
de-duplicates by ``seq``: every QoS 1 event must arrive, duplicates stay bounded
(at-least-once, no storm), and the link's reconnect waits are jittered and capped.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.uplink import MqttConfig, OutboxConfig
from agent.uplink.classes import MsgClass
from agent.uplink.link import Link
from agent.uplink.outbox import Outbox
from agent.uplink.publisher import MAX_INFLIGHT, Publisher
from agent.uplink.topics import Topics
from tests.fault.conftest import figure
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker

TOPICS = Topics("ea/v1", "cam-001")
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 0.8


class DedupSubscriber:
    """A consumer with a persistent session that reconnects by itself and dedups by seq."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.seen: set[int] = set()
        self.received = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="fault-consumer", clean_session=False
        )
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = lambda c, *_a: c.subscribe(TOPICS.detection, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        seq = int(json.loads(msg.payload)["seq"])
        with self._lock:
            self.received += 1
            self.seen.add(seq)

    @property
    def duplicates(self) -> int:
        with self._lock:
            return self.received - len(self.seen)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_restarts(tmp_path: Path, restarts: int, log_events: list[dict[str, object]]) -> None:
    data = tmp_path / "broker-data"
    data.mkdir()
    broker = MosquittoBroker(
        tmp_path / "broker", extra_config=["persistence true", f"persistence_location {data}/"]
    )
    broker.start()
    consumer = DedupSubscriber(broker.url)
    stop = threading.Event()
    state = tmp_path / "state"
    cfg = MqttConfig(
        url=broker.url, reconnect_min_s=RECONNECT_MIN_S, reconnect_max_s=RECONNECT_MAX_S
    )
    outbox = Outbox(
        state, OutboxConfig(batch_interval_s=0.05, drain_rate_per_s=2000), TOPICS.detection_counts
    )
    link = Link(cfg, TOPICS, state, stop)
    publisher = Publisher(outbox, link)
    produced = 0
    producing = threading.Event()
    producing.set()

    def produce() -> None:  # ~200 detections a second, restarts or not
        nonlocal produced
        while producing.is_set():
            outbox.put_json(
                TOPICS.detection,
                {"seq": produced, "camera": "door", "model": "detector", "detections": []},
                MsgClass.DETECTION,
            )
            produced += 1
            time.sleep(0.005)

    producer = threading.Thread(target=produce, name="fault-producer", daemon=True)
    outbox.start()
    link.start()
    publisher.start()
    began = time.monotonic()
    try:
        assert link.wait_connected(10)
        producer.start()
        for _ in range(restarts):
            time.sleep(0.3)
            broker.restart()
            assert link.wait_connected(10), "link did not come back"
        time.sleep(0.3)
        producing.clear()
        producer.join(2)
        assert outbox.flush(10)
        complete = set(range(produced))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not consumer.seen >= complete:
            time.sleep(0.05)
        missing = sorted(complete - consumer.seen)
        snap = outbox.snapshot()
    finally:
        producing.clear()
        stop.set()
        publisher.stop()
        outbox.stop()
        link.stop()
        consumer.close()
        broker.stop()
    waits = [float(e["delay_s"]) for e in log_events if e["event"] == "mqtt_reconnect_wait"]
    refused = snap["dropped"].get("refused", {})
    figure(
        f"broker_restarts[{restarts}]",
        produced=produced,
        delivered_unique=len(consumer.seen & complete),
        missing=len(missing),
        duplicates=consumer.duplicates,
        attempts=link.attempts,
        waits=len(waits),
        wait_max_s=max(waits, default=0.0),
        wait_distinct=len(set(waits)),
        elapsed_s=round(time.monotonic() - began, 1),
    )
    assert not missing, (missing[:20], snap)
    assert not refused
    assert snap["degraded"] == 0  # far under budget: nothing was folded into counts
    # At least once, never a storm: at most one in-flight window re-sent per reconnect.
    assert consumer.duplicates <= MAX_INFLIGHT * (restarts + 1)
    assert link.attempts >= restarts + 1
    assert len(waits) >= restarts
    assert max(waits) <= RECONNECT_MAX_S  # capped
    assert all(w >= 0 for w in waits)
    assert len(set(waits)) >= len(waits) // 2  # jittered, not a fixed schedule


def test_broker_restarts_ci(tmp_path: Path, log_events: list[dict[str, object]]) -> None:
    run_restarts(tmp_path, 5, log_events)


@pytest.mark.slow
def test_broker_50_restarts(tmp_path: Path, log_events: list[dict[str, object]]) -> None:
    run_restarts(tmp_path, 50, log_events)
