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
from agent.update.transfer.session import TransferSession
from agent.update.transfer.settings import ServiceSettings, Superseded
from agent.update.transfer.wire import FrameKind, Topics, encode_answered, encode_frame
from tests.support.transfer_session import faked_index_session

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


def _pull_with_session(tmp_path: Path, *, window: int = 2) -> tuple[StreamPull, Any]:
    """A StreamPull whose driver is asleep for a second, fed a real session on tmp_path:
    a 2-piece chunk index, then 5 chunks of 64 bytes (``window`` in flight, min_batch 1)."""
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
    limits = PlannerLimits(window=window, stall_s=30.0, min_batch=1, answer_grace_s=0.3)
    faked = faked_index_session(
        root / "x", chunks=5, limits=limits, now_s=time.monotonic(), listener=42
    )
    session, index, data = faked.session, faked.index, faked.data
    pull._active = pull_module._Active("dep-1", session, "req")
    event = CountingEvent()
    pull._frames = event
    pull._driver_due_s = time.monotonic() + 1.0  # the driver waits for a second
    first = session.tick(time.monotonic()).request  # the driver's first tick: the index
    assert first is not None
    assert first.indexes == (0, 1)
    frames = [encode_frame(FrameKind.INDEX, 0, n, index[n * 64 : (n + 1) * 64]) for n in (0, 1)]
    frames += [encode_frame(FrameKind.CHUNK, 0, n, data[n * 64 : (n + 1) * 64]) for n in range(5)]
    return pull, SimpleNamespace(bus=bus, event=event, session=session, frames=frames)


def test_frames_that_free_the_window_are_asked_for_on_the_network_thread(
    tmp_path: Path,
) -> None:
    """The network thread sends the next request itself; the sleeping driver is not woken.

    Before: every frame that freed the window woke the driver to send it (a thread switch
    per window move, and under CPU starvation each one met the busy network thread).
    """
    pull, t = _pull_with_session(tmp_path)
    topic = TOPICS.stream("f", "dep-1")
    for frame in t.frames[:2]:  # the index is whole: chunks 0 and 1 are asked for at once
        pull.on_stream(topic, frame)
    assert t.bus.published == ["req"]
    pull.on_stream(topic, t.frames[2])  # chunk 0 frees a slot: chunk 2 is asked for
    assert t.bus.published == ["req", "req"]
    assert t.event.sets == 0  # nothing was due before the driver's own wake-up


def test_the_driver_is_woken_to_finish_and_for_what_falls_due_before_its_wait_ends(
    tmp_path: Path,
) -> None:
    pull, t = _pull_with_session(tmp_path)
    topic = TOPICS.stream("f", "dep-1")
    for frame in t.frames[:3]:
        pull.on_stream(topic, frame)
    assert t.event.sets == 0
    # An ack naming request 1 (chunks 0, 1): chunk 1 did not come before it, so it is
    # asked again 0.3 s later, before the driver's wait ends: the driver must look then.
    pull.on_stream(topic, encode_frame(FrameKind.ACK, 0, 2, encode_answered([(42, 1)])))
    assert t.event.sets == 1
    t.event.clear()
    for frame in t.frames[3:]:
        pull.on_stream(topic, frame)
    assert t.session.parts.bitmap.complete
    assert t.event.sets == 2  # the last chunk: the driver finishes the transfer
    assert t.session.tick(time.monotonic()).done


def test_a_driver_ticking_now_is_flagged_once_instead(tmp_path: Path) -> None:
    """While the driver builds and sends a request (numbers go out in order), frames do not
    tick on the network thread: they set the driver's flag, once per wake-up."""
    pull, t = _pull_with_session(tmp_path)
    topic = TOPICS.stream("f", "dep-1")
    with pull._asking:
        for frame in t.frames[:3]:
            pull.on_stream(topic, frame)
        assert t.bus.published == []
        assert t.event.sets == 1
        t.event.clear()  # the driver woke
        pull.on_stream(topic, t.frames[3])
        assert t.event.sets == 2
