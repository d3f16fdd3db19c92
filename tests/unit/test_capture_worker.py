"""The capture thread: the real clip, a pipe-fed source that stalls and recovers, a dead source."""

from __future__ import annotations

import os
import threading

import pytest

from agent.capture import open_source
from agent.capture.ring import FrameRing
from agent.capture.worker import CameraCapture, CaptureSettings
from agent.config.board import BoardConfig
from agent.config.camera import CameraConfig
from tests.support.pipe_camera import PipeCamera
from tests.support.waiting import wait_for

W, H = 32, 24


@pytest.fixture
def stop():
    event = threading.Event()
    yield event
    event.set()


def test_real_clip_is_drained_into_the_ring(sample_clip, stop):
    camera = CameraConfig(name="clip", source=f"file:{sample_clip}")
    ring = FrameRing("clip")
    capture = CameraCapture(
        "clip", lambda: open_source(camera, BoardConfig(), paced=False), ring, stop
    )
    capture.start()
    assert wait_for(lambda: capture.ended, 20)
    assert ring.published == 210
    frame = ring.take(0)
    assert frame is not None
    assert frame.seq == 210
    assert ring.overwritten[0] == 209  # nobody consumed: all but the newest were overwritten
    assert capture.health() == ("down", "end of stream")
    assert capture.join(2)


def test_stalled_source_is_released_and_reopened(stop, log_events):
    cam = PipeCamera(W, H, "test-feeder")
    ring = FrameRing("pipe")
    settings = CaptureSettings(stall_timeout_s=0.3, reconnect_base_s=0.05, reconnect_max_s=0.1)
    capture = CameraCapture("pipe", cam.open, ring, stop, settings)
    try:
        cam.feeding.set()
        capture.start()
        assert wait_for(lambda: ring.published >= 5)
        assert capture.health()[0] == "ok"
        cam.feeding.clear()  # the stream goes quiet; read() now blocks
        assert wait_for(lambda: capture.check_stall() or capture.stalls.count() > 0, 5)
        assert capture.stalls.count() == 1
        assert capture.health()[0] in ("degraded", "down")
        before = ring.published
        cam.feeding.set()  # the camera comes back
        assert wait_for(lambda: cam.opens >= 2 and ring.published > before + 5, 5)
        assert capture.reconnects.count() >= 1
        assert wait_for(lambda: capture.health()[0] == "ok", 2)
    finally:
        stop.set()
        cam.close()
        capture.join(2)
    names = [e["event"] for e in log_events]
    assert "source_stalled" in names
    assert "source_reconnected" in names


def test_source_that_never_opens_is_an_error_not_a_crash(tmp_path, stop, log_events):
    camera = CameraConfig(name="gone", source=f"file:{tmp_path}/missing.mp4")
    ring = FrameRing("gone")
    settings = CaptureSettings(stall_timeout_s=1.0, reconnect_base_s=0.02, reconnect_max_s=0.05)
    capture = CameraCapture(
        "gone", lambda: open_source(camera, BoardConfig()), ring, stop, settings
    )
    capture.start()
    assert wait_for(lambda: capture.open_failures >= 3)
    status, detail = capture.health()
    assert status == "down"
    assert "missing.mp4" in detail
    assert capture._thread is not None
    assert capture._thread.is_alive()  # keeps retrying with backoff
    stop.set()
    assert capture.join(2)
    failures = [e for e in log_events if e["event"] == "source_open_failed"]
    assert failures[0]["log_level"] == "error"
    assert all(e["log_level"] == "warning" for e in failures[1:])
    assert ring.published == 0


def test_failing_reads_count_as_a_stall_then_reopen(stop, log_events):
    """A source whose reads fail (EOF on a live stream) is released and reopened."""
    cam = PipeCamera(W, H, "test-feeder")
    ring = FrameRing("eof")
    settings = CaptureSettings(stall_timeout_s=0.2, reconnect_base_s=0.02, reconnect_max_s=0.05)
    capture = CameraCapture("eof", cam.open, ring, stop, settings)
    try:
        cam.feeding.set()
        capture.start()
        assert wait_for(lambda: ring.published >= 3)
        cam.feeding.clear()
        with cam._lock:
            for fd in cam.write_fds:
                os.close(fd)  # the writer hangs up: every read now returns None at once
            cam.write_fds = []
        cam.feeding.set()
        assert wait_for(lambda: capture.stalls.count() >= 1 and cam.opens >= 2, 5)
        before = ring.published
        assert wait_for(lambda: ring.published > before + 3, 5)
    finally:
        stop.set()
        cam.close()
        capture.join(2)
    stalls = [e for e in log_events if e["event"] == "source_stalled"]
    assert stalls[0]["why"] == "read_failed"
