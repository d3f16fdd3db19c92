"""The gst: and csi: capture paths on real GStreamer; prints one JSON object.

Runs inside a venv of the system Python made with --system-site-packages (the Jetson
shape): OpenCV is the distribution's, built with GStreamer, and the agent is the
installed wheel. Run by tests/integration/test_capture_gstreamer.py, from a folder that is
not the checkout.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

import agent
from agent.capture import open_source
from agent.capture.base import Source
from agent.capture.ring import FrameRing
from agent.capture.worker import CameraCapture, CaptureSettings
from agent.config.board import BoardConfig
from agent.config.camera import CameraConfig

W, H = 64, 48
FAST = CaptureSettings(stall_timeout_s=1.0, reconnect_base_s=0.05, reconnect_max_s=0.1)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def capture(camera: CameraConfig, board: BoardConfig, seconds: float) -> dict[str, object]:
    """Frames through the agent's capture thread for ``seconds``."""
    stop = threading.Event()
    ring = FrameRing(camera.name)
    worker = CameraCapture(camera.name, lambda: open_source(camera, board), ring, stop, FAST)
    worker.start()
    try:
        flowing = wait_for(lambda: ring.published >= 5)
        time.sleep(seconds)
        frame = ring.take(0)
        return {
            "flowing": flowing,
            "published": ring.published,
            "shape": None if frame is None else list(frame.image.shape),
            "health": worker.health()[0],
        }
    finally:
        stop.set()
        worker.join(3)


class PipeFeeder:
    """Raw BGR frames into an OS pipe read by ``fdsrc``; each open gets a new pipe.

    When ``feeding`` is cleared the writer stays open but quiet, so the appsink's pull
    blocks: a stalled camera, not an ended one.
    """

    def __init__(self) -> None:
        self.feeding = threading.Event()
        self.stop = threading.Event()
        self.opens = 0
        self.write_fds: list[int] = []

    def open(self) -> Source:
        for fd in self.write_fds:  # the old camera is gone: its reader sees EOS and exits
            os.close(fd)
        self.write_fds.clear()
        read_fd, write_fd = os.pipe()
        self.write_fds.append(write_fd)
        self.opens += 1
        threading.Thread(target=self._feed, args=(write_fd,), daemon=True).start()
        pipeline = (
            f"fdsrc fd={read_fd} ! rawvideoparse width={W} height={H} format=bgr "
            "framerate=30/1 ! videoconvert ! video/x-raw,format=BGR"
        )
        return open_source(CameraConfig(name="pipe", source=f"gst:{pipeline}"), BoardConfig())

    def _feed(self, fd: int) -> None:
        frame = np.zeros((H, W, 3), np.uint8).tobytes()
        while not self.stop.is_set():
            if self.feeding.is_set():
                try:
                    os.write(fd, frame)
                except OSError:
                    return  # closed by the next open
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        for fd in self.write_fds:
            os.close(fd)
        self.write_fds.clear()


def stalled_then_reopened() -> dict[str, object]:
    feeder = PipeFeeder()
    stop = threading.Event()
    ring = FrameRing("pipe")
    worker = CameraCapture("pipe", feeder.open, ring, stop, FAST)
    feeder.feeding.set()
    worker.start()
    result: dict[str, object] = {}
    try:
        result["flowing"] = wait_for(lambda: ring.published >= 5)
        feeder.feeding.clear()  # quiet: the reader blocks inside OpenCV's appsink pull
        result["detected"] = wait_for(worker.check_stall, 5)
        result["stalls"] = worker.stalls.count()
        before = ring.published
        feeder.feeding.set()
        result["reflowing"] = wait_for(lambda: ring.published > before + 5, 5)
        result["opens"] = feeder.opens
        result["reconnects"] = worker.reconnects.count()
    finally:
        stop.set()
        feeder.close()
        worker.join(3)
    return result


def ended_then_reopened() -> dict[str, object]:
    """A live pipeline that ends (EOS after 10 buffers): failed reads, a stall, a reopen."""
    camera = CameraConfig(
        name="eos",
        source=(
            f"gst:videotestsrc is-live=true num-buffers=10 ! video/x-raw,width={W},height={H},"
            "framerate=30/1 ! videoconvert ! video/x-raw,format=BGR"
        ),
    )
    stop = threading.Event()
    ring = FrameRing("eos")
    worker = CameraCapture("eos", lambda: open_source(camera, BoardConfig()), ring, stop, FAST)
    worker.start()
    try:
        reopened = wait_for(lambda: worker.reconnects.count() >= 1 and ring.published > 15, 10)
        return {"reopened": reopened, "stalls": worker.stalls.count(), "published": ring.published}
    finally:
        stop.set()
        worker.join(3)


def main() -> None:
    gst_line = next(
        (line.strip() for line in cv2.getBuildInformation().splitlines() if "GStreamer" in line),
        "",
    )
    dists = sorted(
        d.metadata["Name"]
        for d in importlib.metadata.distributions()
        if "opencv" in (d.metadata["Name"] or "").lower()
    )
    board = BoardConfig(
        name="test-csi",
        csi_pipeline=(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
            "framerate={fps}/1 ! videoconvert ! video/x-raw,format=BGR"
        ),
        csi_width=320,
        csi_height=240,
    )
    gst_camera = CameraConfig(
        name="gst",
        source=(
            "gst:videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=30/1 "
            "! videoconvert ! video/x-raw,format=BGR"
        ),
    )
    report = {
        "cv2_file": cv2.__file__,
        "cv2_version": cv2.__version__,
        "gstreamer": gst_line,
        "opencv_dists": dists,
        "numpy_file": np.__file__,
        "numpy_version": np.__version__,
        "agent_file": agent.__file__,
        "gst": capture(gst_camera, BoardConfig(), 1.0),
        "csi": capture(CameraConfig(name="csi", source="csi:0", fps=30), board, 1.0),
        "stall": stalled_then_reopened(),
        "eos": ended_then_reopened(),
    }
    print(json.dumps(report))  # the last line; the agent's log lines come before it


if __name__ == "__main__":
    main()
