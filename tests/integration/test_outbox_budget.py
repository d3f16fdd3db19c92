"""The outbox budget end to end: the daemon, a tiny ``outbox.max_bytes``, the broker down.

Under budget nothing is lost; over budget stats are evicted (counted) and detections are
folded into per-label counts per minute (``degraded``), delivered as ``e/detection_counts``
once the broker is back, so every event is accounted for exactly once (docs/mqtt.md).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.daemon.control import request
from agent.daemon.supervisor import Supervisor
from agent.events.types import Detection, DetectionEvent, EventSink
from tests.integration.mqtt_helpers import Recorder
from tests.integration.test_daemon_supervisor import TOPICS, FakePipeline
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker
MAX_BYTES = 64 * 1024  # the smallest budget the config allows


class ShiftedClock:
    """System time plus an offset the test moves forward to close the minute of counts."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def wall_s(self) -> float:
        return time.time() + self.offset_s

    def monotonic_s(self) -> float:
        return time.monotonic()


class BurstPipeline(FakePipeline):
    """Emits nothing by itself; ``burst(n)`` produces n events as fast as the sink takes them."""

    def __init__(self, sink: EventSink, stop: threading.Event, clock: ShiftedClock) -> None:
        super().__init__(sink, stop)
        self.clock = clock

    def _run(self) -> None:
        self.stop_event.wait()

    def burst(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            dets = (
                Detection("face", 0.9, (1.0, 2.0, 3.0, 4.0)),
                Detection("person", 0.8, (5.0, 6.0, 7.0, 8.0)),
            )
            self.sink(DetectionEvent(self.seq, self.clock.wall_s(), "door", "detector", dets))
            self.progress = time.monotonic()


class Received:
    """A persistent-session subscriber across broker restarts (one Recorder per broker run)."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.done: list[tuple[str, bytes, bool]] = []
        self.rec: Recorder | None = None

    def connect(self) -> None:
        self.rec = Recorder(
            self.broker.url, f"{TOPICS.base}/#", client_id="budget-test", clean=False
        )

    def disconnect(self) -> None:
        if self.rec is not None:
            self.rec.close()
            self.done += self.rec.messages
            self.rec = None

    def on(self, topic: str) -> list[dict[str, Any]]:
        live = self.rec.messages if self.rec is not None else []
        return [json.loads(p) for t, p, _ in [*self.done, *live] if t == topic]


def test_budget_full_degrades_counts_and_loses_nothing(
    tmp_path: Path, write_config, clean_env
) -> None:
    broker = MosquittoBroker(
        tmp_path / "broker",
        extra_config=[
            # The test's subscriber keeps its session (and queued QoS 1 messages) across
            # broker restarts, so nothing the daemon sends while it is away is missed.
            "persistence true",
            f"persistence_location {tmp_path / 'broker'}/",
            "max_queued_messages 0",
        ],
    )
    broker.start()
    got = Received(broker)
    got.connect()  # registers the persistent session
    got.disconnect()
    broker.stop()

    clock = ShiftedClock()
    pipelines: list[BurstPipeline] = []

    def factory(_c: object, sink: EventSink, _d: object, stop: threading.Event) -> BurstPipeline:
        pipelines.append(BurstPipeline(sink, stop, clock))
        return pipelines[-1]

    path = write_config(
        f"""
        [device]
        id = "cam-001"
        [mqtt]
        url = "{broker.url}"
        reconnect_min_s = 0.1
        reconnect_max_s = 0.3
        [storage]
        state_dir = "{tmp_path / "state"}"
        [control]
        socket_path = "{tmp_path / "run" / "control.sock"}"
        [telemetry]
        stats_interval_s = 0.2
        health_interval_s = 0.2
        [outbox]
        max_bytes = {MAX_BYTES}
        batch_interval_s = 0.05
        drain_rate_per_s = 2000
        """
    )
    sup = Supervisor(load_config(path, {}), pipeline_factory=factory, clock=clock)
    runner = threading.Thread(target=sup.run, name="test-daemon")
    runner.start()
    try:
        assert _wait(lambda: bool(pipelines) and sup.outbox is not None)
        outbox = sup.outbox
        assert outbox is not None
        pipeline = pipelines[0]

        # 1. Broker down, under budget: everything is kept and delivered intact.
        pipeline.burst(40)
        assert outbox.flush(5)
        snap = outbox.snapshot()
        assert snap["degraded"] == 0
        assert snap["by_class"]["detection"]["depth"] == 40
        broker.start()
        got.connect()
        assert _wait(lambda: len(got.on(TOPICS.detection)) >= 40)
        assert [e["seq"] for e in got.on(TOPICS.detection)] == list(range(1, 41))
        assert _wait(lambda: outbox.snapshot()["depth"] <= 2)  # only live stats/health left
        got.disconnect()
        broker.stop()
        assert _wait(lambda: sup.link is not None and not sup.link.connected)

        # 2. Broker down, far over budget: stats evicted, detections degraded, bytes capped.
        time.sleep(0.5)  # a few stats messages queue up behind the dead link
        pipeline.burst(1500)
        assert outbox.flush(10)
        snap = outbox.snapshot()
        assert snap["bytes"] <= MAX_BYTES
        degraded = snap["degraded"]
        assert degraded > 1000
        assert snap["dropped"]["evicted"]["stats"] > 0
        assert not any("detection" in per for per in snap["dropped"].values())
        kept = snap["by_class"]["detection"]["depth"]
        assert kept + degraded == 1500
        status = request(Path(sup.config.control.socket_path), {"op": "status"})
        assert status["outbox"]["dropped"]["evicted"]["stats"] > 0

        # 3. The minute closes, the broker is back: counts summaries plus the kept detections.
        clock.offset_s = 120.0
        broker.start()
        got.connect()
        assert _wait(
            lambda: sum(s["events"] for s in got.on(TOPICS.detection_counts)) >= degraded, 20
        ), outbox.snapshot()
        assert _wait(lambda: len(got.on(TOPICS.detection)) >= 40 + kept)
        summaries = got.on(TOPICS.detection_counts)
        assert sum(s["events"] for s in summaries) == degraded
        assert sum(s["counts"]["face"] for s in summaries) == degraded
        assert sum(s["counts"]["person"] for s in summaries) == degraded
        assert all(s["degraded"] is True and s["camera"] == "door" for s in summaries)
        later = [e["seq"] for e in got.on(TOPICS.detection)][40:]
        assert later == sorted(later)
        assert len(set(later)) == kept
        # Detections do not evict detections: those that fitted are kept whole, the ones
        # arriving when the budget was full were folded (only alarms evict detections).
        assert later == list(range(41, 41 + kept))

        # The counters reach the operator in m/stats (one taken after the summaries left).
        def settled(doc: dict[str, Any]) -> bool:
            out = doc["outbox"]
            return bool(
                out["degraded"] == degraded
                and out["pending_counts"] == 0
                and out["dropped"].get("evicted", {}).get("stats", 0) > 0
            )

        assert _wait(lambda: any(settled(d) for d in got.on(TOPICS.stats)))
    finally:
        sup.stop_event.set()
        runner.join(20)
        got.disconnect()
        broker.stop()


def _wait(predicate: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
