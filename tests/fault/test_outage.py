"""A 24-hour broker outage, compressed in time through the outbox's clock seam.

The store is driven minute by minute on a fake wall clock (the clock that stamps
acceptance and decides expiry), exactly as the writer thread drives it, with real SQLite
on disk. Checked against docs/mqtt.md: under budget nothing is lost and everything is
delivered once the broker is back; over budget stats go first, detections are folded into
per-minute counts that add up exactly, alarms survive; TTL is wall-clock from acceptance,
so time spent powered off counts across an agent restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.config.uplink import MqttConfig, OutboxConfig
from agent.uplink.classes import MsgClass, OutMessage
from agent.uplink.link import Link
from agent.uplink.outbox import DB_NAME, Outbox
from agent.uplink.outbox_store import OutboxStore
from agent.uplink.publisher import Publisher
from agent.uplink.topics import Topics
from tests.fault.conftest import figure
from tests.integration.mqtt_helpers import Recorder
from tests.support.mosquitto import MosquittoBroker

TOPICS = Topics("ea/v1", "cam-001")
T0 = 1_760_000_000.0  # a plausible wall clock (2025-10), a minute boundary
LABELS = ("face", "person", "car")
STATS_PAD = "x" * 400  # a stats document is a few hundred bytes


class FakeClock:
    def __init__(self, wall_s: float) -> None:
        self.wall = wall_s

    def wall_s(self) -> float:
        return self.wall

    def monotonic_s(self) -> float:
        return time.monotonic()


def detection(seq: int, ts: float) -> OutMessage:
    labels = [LABELS[seq % 3]] * (1 + seq % 2)
    doc = {
        "seq": seq,
        "ts": ts,
        "camera": "door",
        "model": "detector",
        "detections": [{"label": lb, "score": 0.9, "box": [1, 2, 3, 4]} for lb in labels],
    }
    return OutMessage(
        TOPICS.detection, json.dumps(doc).encode(), 1, retain=False, cls=MsgClass.DETECTION
    )


def stats(ts: float) -> OutMessage:
    doc = {"ts": ts, "pad": STATS_PAD}
    return OutMessage(TOPICS.stats, json.dumps(doc).encode(), 0, retain=False, cls=MsgClass.STATS)


def alarm(hour: int, ts: float) -> OutMessage:
    doc = {"severity": "major", "text": f"hour {hour}", "since": ts}
    return OutMessage(
        TOPICS.alarm(f"test_{hour}"), json.dumps(doc).encode(), 1, retain=True, cls=MsgClass.ALARM
    )


def simulate(store: OutboxStore, clock: FakeClock, minutes: int, per_minute: int) -> Counter[str]:
    """Produce ``per_minute`` detections and one stats message a minute, an alarm an hour."""
    produced: Counter[str] = Counter()
    seq = 0
    for minute in range(minutes):
        batch: list[OutMessage] = []
        for i in range(per_minute):
            clock.wall = T0 + minute * 60 + i * 60 / per_minute
            msg = detection(seq, clock.wall)
            for det in json.loads(msg.payload)["detections"]:
                produced[det["label"]] += 1
            produced["events"] += 1
            batch.append(msg)
            seq += 1
        batch.append(stats(clock.wall))
        produced["stats"] += 1
        if minute % 60 == 0:
            batch.append(alarm(minute // 60, clock.wall))
            produced["alarms"] += 1
        store.insert_batch(batch)
        store.maintain()  # the writer does this once a second; here once a simulated minute
        assert store.snapshot()["bytes"] <= store.cfg.max_bytes
    return produced


def rows(db: Path) -> list[tuple[int, str, bytes]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT cls, topic, payload FROM messages ORDER BY id").fetchall()


def counted(db: Path) -> Counter[str]:
    """Events and labels still represented in the database, in any form."""
    found: Counter[str] = Counter()
    for cls, topic, payload in rows(db):
        if cls != MsgClass.DETECTION:
            continue
        doc = json.loads(payload)
        if topic == TOPICS.detection_counts:
            found["events"] += doc["events"]
            found.update(doc["counts"])
        else:
            found["events"] += 1
            found.update(d["label"] for d in doc["detections"])
    with sqlite3.connect(db) as con:
        for label, n in con.execute("SELECT label, n FROM counts").fetchall():
            found["events" if label == "" else label] += n
    return found


def test_outage_over_budget_degrades_exactly_as_documented(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    # Detections kept past the outage so the accounting below needs no expiry term.
    cfg = OutboxConfig(max_bytes=64 * 1024, detection_ttl_s=48 * 3600, fsync="off")
    db = tmp_path / DB_NAME
    store = OutboxStore(db, cfg, clock, TOPICS.detection_counts)
    produced = simulate(store, clock, minutes=24 * 60, per_minute=2)
    snap = store.snapshot()
    store.close()
    dropped = snap["dropped"]
    left = Counter(MsgClass(cls).label for cls, _, _ in rows(db))
    figure(
        "outage_24h_over_budget",
        produced_events=produced["events"],
        produced_stats=produced["stats"],
        budget_bytes=cfg.max_bytes,
        bytes=snap["bytes"],
        degraded=snap["degraded"],
        left=dict(left),
        dropped=dropped,
    )
    # Detections: every event and every label is still there, as a row or as counts.
    found = counted(db)
    for key in ("events", *LABELS):
        assert found[key] == produced[key], key
    assert snap["degraded"] > 0
    assert "detection" not in dropped.get("evicted", {})
    # Stats went first, each one accounted for.
    stats_gone = sum(dropped.get(k, {}).get("stats", 0) for k in ("evicted", "rejected", "expired"))
    assert dropped["evicted"]["stats"] > 0
    assert left["stats"] + stats_gone == produced["stats"]
    # Alarms: all kept.
    assert left["alarm"] == produced["alarms"]
    assert "alarm" not in dropped.get("evicted", {})


def test_outage_under_budget_loses_nothing_and_delivers_after(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    clock = FakeClock(T0)
    cfg = OutboxConfig(fsync="off", drain_rate_per_s=5000, batch_interval_s=0.05)
    state = tmp_path / "state"
    store = OutboxStore(state / DB_NAME, cfg, clock, TOPICS.detection_counts)
    hours = 20  # the documented detection TTL is 24 h: a shorter outage must lose none
    produced = simulate(store, clock, minutes=hours * 60, per_minute=1)
    snap = store.snapshot()
    store.close()
    assert snap["degraded"] == 0
    assert snap["dropped"].get("evicted", {}) == {}
    assert snap["by_class"]["detection"]["depth"] == produced["events"]
    # Stats older than their 1 h TTL expired, as documented; none other did.
    assert snap["dropped"]["expired"] == {"stats": produced["stats"] - 60}
    # The broker is back: the agent restarts on the same state dir and drains it all.
    rec = Recorder(mosquitto.url, f"{TOPICS.base}/#")
    stop = threading.Event()
    outbox = Outbox(state, cfg, TOPICS.detection_counts, clock)
    link = Link(MqttConfig(url=mosquitto.url), TOPICS, state, stop)
    publisher = Publisher(outbox, link)
    began = time.monotonic()
    outbox.start()
    link.start()
    publisher.start()
    try:
        want = set(range(produced["events"]))
        got = lambda: {json.loads(p)["seq"] for p in rec.on(TOPICS.detection)}  # noqa: E731
        assert rec.wait_for(lambda: got() >= want, timeout_s=60), len(want - got())
        assert rec.wait_for(lambda: outbox.snapshot()["depth"] == 0, timeout_s=10)
        drained_s = time.monotonic() - began
    finally:
        stop.set()
        publisher.stop()
        outbox.stop()
        link.stop()
        rec.close()
    alarms = {t for t, _, _ in rec.messages if "/a/test_" in t}
    assert len(alarms) == produced["alarms"]
    figure(
        f"outage_{hours}h_under_budget",
        events=produced["events"],
        delivered=len(want),
        alarms=len(alarms),
        expired_stats=produced["stats"] - 60,
        drain_s=round(drained_s, 1),
    )


def test_ttl_counts_time_powered_off_across_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    cfg = OutboxConfig(fsync="always")
    db = tmp_path / DB_NAME
    store = OutboxStore(db, cfg, clock, TOPICS.detection_counts)
    store.insert_batch([detection(i, T0) for i in range(10)] + [stats(T0) for _ in range(5)])
    store.close()  # the agent stops; the device is off for two hours
    clock.wall = T0 + 2 * 3600
    store = OutboxStore(db, cfg, clock, TOPICS.detection_counts)
    store.maintain()  # what Outbox.start() does first
    snap = store.snapshot()
    assert snap["dropped"]["expired"] == {"stats": 5}
    assert snap["by_class"]["detection"]["depth"] == 10
    assert snap["accepted"] == {"detection": 10, "stats": 5}  # counters survive the restart
    store.close()
    clock.wall = T0 + 24 * 3600 + 1  # past the detections' 24 h, counted from acceptance
    store = OutboxStore(db, cfg, clock, TOPICS.detection_counts)
    store.maintain()
    snap = store.snapshot()
    assert snap["dropped"]["expired"] == {"stats": 5, "detection": 10}
    assert snap["depth"] == 0
    store.close()


def test_clock_set_backwards_extends_ttl(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = OutboxStore(tmp_path / DB_NAME, OutboxConfig(), clock, TOPICS.detection_counts)
    store.insert_batch([stats(T0)])
    clock.wall = T0 - 86400  # an RTC-less board boots at an old time
    store.maintain()
    clock.wall = T0 + 3599
    store.maintain()
    assert store.snapshot()["dropped"] == {}
    clock.wall = T0 + 3600
    store.maintain()
    assert store.snapshot()["dropped"] == {"expired": {"stats": 1}}
    store.close()


@pytest.mark.slow
def test_outage_24h_over_budget_at_one_event_per_5s(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    cfg = OutboxConfig(max_bytes=256 * 1024, detection_ttl_s=48 * 3600, fsync="batch")
    db = tmp_path / DB_NAME
    store = OutboxStore(db, cfg, clock, TOPICS.detection_counts)
    produced = simulate(store, clock, minutes=24 * 60, per_minute=12)
    snap = store.snapshot()
    store.close()
    found = counted(db)
    figure(
        "outage_24h_over_budget_12_per_min",
        produced_events=produced["events"],
        degraded=snap["degraded"],
        dropped=snap["dropped"],
        bytes=snap["bytes"],
    )
    for key in ("events", *LABELS):
        assert found[key] == produced[key], key
