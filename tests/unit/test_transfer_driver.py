"""The device's transfer driver (``StreamPull.pull``): how often it wakes and what wakes it.

No broker: a recording bus, a real ``TransferSession`` and ``OpReporter`` on tmp_path.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.clock import SystemClock
from agent.update.transfer import pull as pull_module
from agent.update.transfer.bitmap import ChunkBitmap
from agent.update.transfer.planner import PlannerLimits, WindowPlanner
from agent.update.transfer.pull import StreamPull, driver_wait_s
from agent.update.transfer.report import OpReporter
from agent.update.transfer.session import IndexRef, TransferSession
from agent.update.transfer.settings import ServiceSettings, Superseded
from agent.update.transfer.wire import FrameKind, Topics, encode_frame

TOPICS = Topics("ea/v1")


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[str] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object:
        del payload, qos, retain
        self.published.append(topic)
        return None

    def subscribe(self, topic_filter: str, callback: Any) -> None:
        del topic_filter, callback

    def unsubscribe(self, topic_filter: str) -> None:
        del topic_filter


def _verified() -> Any:
    chunk_index = SimpleNamespace(length=100, sha256="ab" * 32)
    manifest = SimpleNamespace(
        deployment_id="dep-1", chunk_index=chunk_index, chunk_size=64, fleet="f"
    )
    return SimpleNamespace(manifest=manifest)


def test_planner_next_due_is_the_earliest_stall_expiry_else_the_deadline() -> None:
    limits = PlannerLimits(window=4, stall_s=5.0, deadline_s=100.0, min_batch=1)
    planner = WindowPlanner(ChunkBitmap(10), limits, started_s=10.0)
    assert planner.next_due_s() == 110.0  # nothing asked yet: only the deadline
    planner.plan(11.0)  # chunks 0-3 in flight since 11.0
    assert planner.next_due_s() == 16.0
    planner.arrived(0, 12.0, fresh=True)
    planner.plan(12.0)  # chunk 4 asked at 12.0; 1-3 still since 11.0
    assert planner.next_due_s() == 16.0
    # Busy stream: the stalls are deferred (jitter 0.5 -> due again one stall period on).
    planner.jitter = lambda: 0.5
    planner.saw_frame(15.9)
    planner.plan(16.0)
    assert planner.deferred == 3
    assert planner.next_due_s() == 17.0  # chunk 4's own expiry now comes first
    assert driver_wait_s(16.0, planner.next_due_s(), 99.0) == pytest.approx(1.0)


def test_driver_wait_is_clamped() -> None:
    assert driver_wait_s(0.0, 0.001) == pull_module.MIN_WAIT_S  # due now: no busy loop
    assert driver_wait_s(0.0, 30.0, 60.0) == pull_module.MAX_WAIT_S
    assert driver_wait_s(0.0, 0.3, 0.2) == pytest.approx(0.2)


def _run_pull(tmp_path: Path, seconds: float, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    ticks = [0]
    real_tick = TransferSession.tick

    def counting_tick(self: TransferSession, now_s: float) -> Any:
        ticks[0] += 1
        return real_tick(self, now_s)

    monkeypatch.setattr(TransferSession, "tick", counting_tick)
    bus = RecordingBus()
    stop = threading.Event()
    root = tmp_path / "transfer"
    reporter = OpReporter(bus, TOPICS, "dev-1", root / "op_states.json")
    settings = ServiceSettings("dev-1", "f", window=8, stall_s=5.0, progress_interval_s=10.0)
    pull = StreamPull(
        bus,
        TOPICS,
        settings,
        transfer_root=root,
        reporter=reporter,
        stop=stop,
        clock=SystemClock(),
    )
    superseded = threading.Event()
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = pull.pull(_verified(), {}, time.monotonic(), superseded.is_set)
        except Superseded:
            out["result"] = "superseded"

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(seconds)
    out["ticks"] = ticks[0]
    out["requests"] = sum(t.endswith("/req") for t in bus.published)
    superseded.set()
    pull.wake()  # what UpdateService._on_deploy does for a newer manifest
    thread.join(2.0)
    out["stopped"] = not thread.is_alive()
    stop.set()
    pull.wake()
    thread.join(2.0)
    return out


def test_waiting_driver_does_not_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing arrives, nothing is due for 5 s: the driver sleeps instead of ticking at 20 Hz.

    Before: a fixed 50 ms poll, ~12 ticks in 0.6 s. The wake that ``UpdateService`` sends
    for a new manifest still ends the wait at once.
    """
    out = _run_pull(tmp_path, 0.6, monkeypatch)
    assert out["requests"] == 1  # the chunk index, asked for once
    assert out["ticks"] <= 2  # the first tick and at most one bounded wake-up
    assert out["stopped"]
    assert out["result"] == "superseded"


class CountingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


def test_frames_wake_a_driver_that_is_not_already_woken(tmp_path: Path) -> None:
    """One set per wake-up: frames after it find the flag set and leave the event alone."""
    bus = RecordingBus()
    root = tmp_path / "transfer"
    pull = StreamPull(
        bus,
        TOPICS,
        ServiceSettings("dev-1", "f"),
        transfer_root=root,
        reporter=OpReporter(bus, TOPICS, "dev-1", root / "op_states.json"),
        stop=threading.Event(),
        clock=SystemClock(),
    )
    session = TransferSession(
        directory=root / "x",
        index_ref=IndexRef(100, "ab" * 32, 64),
        parse_index=lambda _b: None,  # type: ignore[arg-type, return-value]
        limits=PlannerLimits(window=4),
        now_s=0.0,
        listener=1,
    )
    pull._active = ("dep-1", session)
    event = CountingEvent()
    pull._frames = event
    topic = TOPICS.stream("f", "dep-1")
    ack = encode_frame(FrameKind.ACK, 0, 1, b"")
    assert session.wants_tick  # still fetching its index: every frame may matter
    for _ in range(3):
        pull.on_stream(topic, ack)
    assert event.sets == 1
    event.clear()  # the driver woke
    pull.on_stream(topic, ack)
    assert event.sets == 2
