"""Camera fault: a pipe-fed source stalls and comes back, over and over.

The source is an OS pipe carrying raw BGR frames, as from an ``ffmpeg -f rawvideo`` child:
when the writer goes quiet, ``read()`` blocks in ``os.read`` — the real shape of a stalled
stream, which no timeout inside the reader can break. The capture layer must detect the
stall from outside (``check_stall``, as the pipeline's monitor calls it), abandon the reader,
reopen, and be back to delivering frames, every time, without growing.
"""

from __future__ import annotations

import gc
import threading
import time

import pytest

from agent.capture.ring import FrameRing
from agent.capture.worker import CameraCapture, CaptureSettings
from tests.fault.conftest import figure, open_fds, rss_mb
from tests.support.pipe_camera import PipeCamera
from tests.support.waiting import wait_for

W, H = 160, 120


def run_cycles(cycles: int) -> dict[str, float]:
    cam = PipeCamera(W, H, "fault-feeder")
    ring = FrameRing("pipe")
    stop = threading.Event()
    settings = CaptureSettings(stall_timeout_s=0.25, reconnect_base_s=0.02, reconnect_max_s=0.05)
    capture = CameraCapture("pipe", cam.open, ring, stop, settings)

    def monitor() -> None:  # what the pipeline's monitor thread does
        while not stop.wait(0.02):
            capture.check_stall()

    watcher = threading.Thread(target=monitor, name="fault-monitor", daemon=True)
    recoveries: list[float] = []
    try:
        cam.feeding.set()
        capture.start()
        watcher.start()
        assert wait_for(lambda: ring.published >= 5, 5)
        baseline_rss = baseline_fds = baseline_threads = 0.0
        for cycle in range(cycles + 2):  # two warm-up cycles settle allocator and threads
            if cycle == 2:
                gc.collect()
                baseline_rss, baseline_fds = rss_mb(), open_fds()
                baseline_threads = threading.active_count()
            stalls = capture.stalls.count()
            cam.feeding.clear()  # the stream goes quiet: read() blocks
            assert wait_for(lambda s=stalls: capture.stalls.count() > s, 5), f"cycle {cycle}"
            published = ring.published
            resumed = time.monotonic()
            cam.feeding.set()  # the camera is back
            assert wait_for(lambda p=published: ring.published > p, 5), f"no recovery {cycle}"
            if cycle >= 2:
                recoveries.append(time.monotonic() - resumed)
            assert wait_for(lambda: capture.health()[0] == "ok", 2), capture.health()
        gc.collect()
        time.sleep(0.1)  # abandoned readers finish their EOF read and exit
        grown_rss = rss_mb() - baseline_rss
        grown_fds = open_fds() - baseline_fds
        grown_threads = threading.active_count() - baseline_threads
    finally:
        stop.set()
        cam.close()
        capture.join(2)
        watcher.join(2)
    recoveries.sort()
    return {
        "cycles": cycles,
        "recovered": len(recoveries),
        "reconnects": capture.reconnects.count(),
        "recovery_p50_ms": round(recoveries[len(recoveries) // 2] * 1000, 1),
        "recovery_max_ms": round(recoveries[-1] * 1000, 1),
        "rss_growth_mb": round(grown_rss, 2),
        "fd_growth": grown_fds,
        "thread_growth": grown_threads,
    }


def check(result: dict[str, float], cycles: int) -> None:
    figure(f"camera_stall_cycles[{cycles}]", **result)
    assert result["recovered"] == cycles
    assert result["reconnects"] >= cycles
    assert result["rss_growth_mb"] < 5.0
    assert result["fd_growth"] <= 2  # no pipe leaked per cycle
    assert result["thread_growth"] <= 2  # abandoned readers exit


def test_camera_stall_reconnect_ci() -> None:
    check(run_cycles(10), 10)


@pytest.mark.slow
def test_camera_stall_reconnect_100_cycles() -> None:
    check(run_cycles(100), 100)
