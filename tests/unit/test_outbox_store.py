"""Outbox rules on a real SQLite file: budget, priority eviction, degradation, TTL, counters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agent.config.uplink import OutboxConfig
from agent.uplink.classes import MsgClass, OutMessage
from agent.uplink.outbox_store import OutboxStore

COUNTS_TOPIC = "ea/v1/d/dev/e/detection_counts"


@dataclass
class FakeClock:
    now: float = 1_800_000_000.0

    def wall_s(self) -> float:
        return self.now

    def monotonic_s(self) -> float:
        return self.now


def det(seq: int, labels: tuple[str, ...] = ("face",), ts: float = 1_800_000_000.0) -> OutMessage:
    doc = {
        "seq": seq,
        "ts": ts,
        "camera": "door",
        "model": "detector",
        "detections": [{"label": lab, "score": 0.9, "box": [0, 0, 1, 1]} for lab in labels],
        "pad": "x" * 400,
    }
    return OutMessage(
        "ea/v1/d/dev/e/detection", json.dumps(doc).encode(), 1, retain=False, cls=MsgClass.DETECTION
    )


def stats(i: int) -> OutMessage:
    return OutMessage(
        "ea/v1/d/dev/m/stats",
        json.dumps({"i": i, "pad": "y" * 400}).encode(),
        0,
        retain=False,
        cls=MsgClass.STATS,
    )


def alarm(name: str, text: str = "on") -> OutMessage:
    return OutMessage(
        f"ea/v1/d/dev/a/{name}",
        json.dumps({"text": text}).encode(),
        1,
        retain=True,
        cls=MsgClass.ALARM,
    )


def open_store(tmp_path: Path, clock: FakeClock, **cfg: object) -> OutboxStore:
    return OutboxStore(tmp_path / "outbox.db", OutboxConfig(**cfg), clock, COUNTS_TOPIC)


def test_priority_then_acceptance_order(tmp_path: Path) -> None:
    store = open_store(tmp_path, FakeClock())
    store.insert_batch([stats(1), det(1), alarm("hot"), det(2), stats(2)])
    rows = store.next_rows(above_id=0, up_to_id=None, exclude=set(), limit=10)
    assert [r.cls for r in rows] == [
        MsgClass.ALARM,
        MsgClass.DETECTION,
        MsgClass.DETECTION,
        MsgClass.STATS,
        MsgClass.STATS,
    ]
    assert [json.loads(r.payload)["seq"] for r in rows[1:3]] == [1, 2]


def test_survives_reopen_and_counts_delivery(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_store(tmp_path, clock)
    store.insert_batch([det(i) for i in range(5)])
    store.close()
    store = open_store(tmp_path, clock)
    rows = store.next_rows(above_id=0, up_to_id=None, exclude=set(), limit=10)
    assert len(rows) == 5
    store.delete({r.row_id: r.cls for r in rows[:3]})
    snap = store.snapshot()
    assert snap["depth"] == 2
    assert snap["delivered"] == {"detection": 3}
    assert snap["accepted"] == {"detection": 5}


def test_retained_supersedes_undelivered_same_topic(tmp_path: Path) -> None:
    store = open_store(tmp_path, FakeClock())
    store.insert_batch([alarm("hot", "a"), alarm("hot", "b"), alarm("cold")])
    rows = store.next_rows(above_id=0, up_to_id=None, exclude=set(), limit=10)
    assert [json.loads(r.payload)["text"] for r in rows] == ["b", "on"]
    assert store.snapshot()["superseded"] == 1


def test_budget_evicts_stats_then_degrades_detections(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_store(tmp_path, clock, max_bytes=64 * 1024)
    store.insert_batch([stats(i) for i in range(60)])
    store.insert_batch([det(i, ("face", "person")) for i in range(300)])
    snap = store.snapshot()
    assert snap["bytes"] <= 64 * 1024
    assert snap["dropped"]["evicted"]["stats"] == 60  # all stats gave way to detections
    assert "stats" not in snap["by_class"]
    degraded = snap["degraded"]
    assert degraded > 0
    kept = snap["by_class"]["detection"]["depth"]
    assert kept + degraded == 300  # nothing vanished: each detection is stored or counted

    # Stats that arrive now cannot evict anything: rejected and counted.
    store.insert_batch([stats(99)])
    assert store.snapshot()["dropped"]["rejected"]["stats"] == 1

    # The next minute, the counts become one summary message with the exact totals.
    clock.now += 120
    store.maintain()
    rows = store.next_rows(above_id=0, up_to_id=None, exclude=set(), limit=1000)
    summaries = [json.loads(r.payload) for r in rows if r.topic == COUNTS_TOPIC]
    assert store.snapshot()["pending_counts"] == 0
    assert len(summaries) == 1
    assert summaries[0]["events"] == degraded
    assert summaries[0]["counts"] == {"face": degraded, "person": degraded}
    assert summaries[0]["degraded"] is True


def test_alarm_displaces_detections_into_counts(tmp_path: Path) -> None:
    store = open_store(tmp_path, FakeClock(), max_bytes=64 * 1024)
    store.insert_batch([det(i) for i in range(200)])
    before = store.snapshot()
    store.insert_batch([alarm(f"a{i}", "z" * 2000) for i in range(5)])
    after = store.snapshot()
    assert after["by_class"]["alarm"]["depth"] == 5
    assert after["degraded"] > before["degraded"]
    assert after["bytes"] <= 64 * 1024


def test_ttl_expiry_is_counted_per_class(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_store(tmp_path, clock, stats_ttl_s=10, detection_ttl_s=100)
    store.insert_batch([stats(1), stats(2), det(1)])
    clock.now += 11
    store.maintain()
    snap = store.snapshot()
    assert snap["dropped"]["expired"] == {"stats": 2}
    assert snap["depth"] == 1
    clock.now += 100
    store.maintain()
    assert store.snapshot()["dropped"]["expired"] == {"stats": 2, "detection": 1}


def test_live_and_backlog_ranges(tmp_path: Path) -> None:
    store = open_store(tmp_path, FakeClock())
    store.insert_batch([det(i) for i in range(3)])
    mark = store.max_id()
    store.insert_batch([det(i) for i in range(3, 5)])
    live = store.next_rows(above_id=mark, up_to_id=None, exclude=set(), limit=10)
    backlog = store.next_rows(above_id=0, up_to_id=mark, exclude={1}, limit=10)
    assert [json.loads(r.payload)["seq"] for r in live] == [3, 4]
    assert [json.loads(r.payload)["seq"] for r in backlog] == [1, 2]
