"""rtsp:// cameras against a real RTSP server on loopback (tests/support/rtsp_server.py).

OpenCV's bundled FFmpeg connects over TCP, receives the sample clip as RFC 2435 Motion-JPEG
and decodes it; the agent's own source and capture thread carry it into the ring. The
server then stalls (RTP stops, TCP stays up), drops its clients, or is not there at all.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.capture import open_source
from agent.capture.ring import FrameRing
from agent.capture.sources import FFMPEG_LOW_LATENCY, FFMPEG_OPTIONS_ENV, ffmpeg_open_params
from agent.capture.worker import CameraCapture, CaptureSettings
from agent.config.board import BoardConfig
from agent.config.camera import CameraConfig
from agent.diag.camera import check_camera_local
from agent.errors import SourceOpenError
from tests.support.rtsp_server import RtspServer, SilentListener, clip_frames, refused_url
from tests.support.waiting import wait_for

FPS = 15.0
SERVED, STEP = 30, 7  # every 7th frame of the 210-frame clip: neighbours differ clearly
MAX_MAD = 4.0  # mean absolute difference (0-255) from the served frame: JPEG is lossy
TCP_SETUP = "RTP/AVP/TCP;unicast;interleaved=0-1"


def figure(name: str, **values: object) -> None:
    print(f"\nFIGURE {name}: " + " ".join(f"{k}={v}" for k, v in values.items()))


@pytest.fixture(scope="module")
def clip_images(sample_clip) -> list[npt.NDArray[np.uint8]]:
    return clip_frames(sample_clip, SERVED, STEP)


@pytest.fixture(scope="module")
def references(clip_images) -> npt.NDArray[np.int16]:
    return np.stack([image[::4, ::4] for image in clip_images]).astype(np.int16)


def best_match(
    image: npt.NDArray[np.uint8], references: npt.NDArray[np.int16]
) -> tuple[int, float]:
    """Index of the served frame closest to ``image`` and its mean absolute difference."""
    mad = np.abs(references - image[::4, ::4].astype(np.int16)).mean(axis=(1, 2, 3))
    index = int(mad.argmin())
    return index, float(mad[index])


@pytest.fixture
def server(clip_images) -> Iterator[RtspServer]:
    served = RtspServer(clip_images, FPS)
    yield served
    served.stop()


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def start_capture(camera: CameraConfig, stop: threading.Event) -> CameraCapture:
    """The agent's capture thread on the agent's source; settings as the pipeline makes them."""
    settings = CaptureSettings(
        stall_timeout_s=camera.stall_timeout_s,
        reconnect_base_s=0.05,
        reconnect_max_s=camera.reconnect_max_s,
    )
    ring = FrameRing(camera.name)
    capture = CameraCapture(
        camera.name, lambda: open_source(camera, BoardConfig()), ring, stop, settings
    )
    capture.start()
    return capture


def rtsp_camera(url: str, **overrides: float) -> CameraConfig:
    return CameraConfig(name="door", source=url, fps=FPS, reconnect_max_s=0.2, **overrides)


def finish(capture: CameraCapture, stop: threading.Event, camera: CameraConfig) -> None:
    stop.set()
    # A reader blocked in FFmpeg returns by its own read or open timeout: never a hang.
    assert capture.join(max(camera.stall_timeout_s, camera.open_timeout_s) + 2)


def test_opencv_reads_the_served_clip(server, references, monkeypatch):
    """The server itself: OpenCV's FFmpeg decodes the clip, every frame, in order."""
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, FFMPEG_LOW_LATENCY)
    cap = cv2.VideoCapture(server.url, cv2.CAP_FFMPEG, ffmpeg_open_params(5.0, 5.0))
    try:
        assert cap.isOpened()
        matches = []
        for _ in range(12):
            ok, image = cap.read()
            assert ok
            assert image.shape == (480, 640, 3)
            matches.append(best_match(image, references))
    finally:
        cap.release()
    assert all(mad < MAX_MAD for _, mad in matches), matches
    indices = [index for index, _ in matches]
    # TCP loses nothing: consecutive frames of the served loop.
    assert all((b - a) % SERVED == 1 for a, b in itertools.pairwise(indices)), indices
    assert server.transports == [TCP_SETUP]
    assert (server.setups, server.plays) == (1, 1)


def test_frames_flow_into_the_ring_at_the_server_rate(
    server, references, stop, sample_clip, monkeypatch
):
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)
    camera = rtsp_camera(server.url, stall_timeout_s=3.0, open_timeout_s=5.0)
    capture = start_capture(camera, stop)
    try:
        assert wait_for(lambda: capture.ring.published >= 1, 10), capture.last_error
        time.sleep(0.5)  # frames buffered while FFmpeg probed the stream drain first
        published, sent, start = capture.ring.published, server.frames_sent, time.monotonic()
        time.sleep(1.5)
        got = capture.ring.published - published
        served = server.frames_sent - sent
        rate = got / (time.monotonic() - start)
        figure("rtsp_capture", fps=round(rate, 1), frames=got, served=served)
        # At the rate the server managed (a loaded machine slows both ends alike):
        # every served frame arrives, none twice.
        assert served >= 5
        assert abs(got - served) <= 4
        assert rate <= 1.4 * FPS
        frame = capture.ring.take(0)
        assert frame is not None
        assert frame.image.shape == (480, 640, 3)
        assert best_match(frame.image, references)[1] < MAX_MAD
        assert capture.health()[0] == "ok"
        assert capture.reconnects.count() == 0
    finally:
        finish(capture, stop, camera)
    assert server.transports == [TCP_SETUP]  # the agent forces TCP: no UDP attempt first
    assert server.plays == 1
    # Regression: the RTSP options stayed in the environment for good, and a file opened
    # afterwards lost its first frame to fflags;nobuffer.
    assert FFMPEG_OPTIONS_ENV not in os.environ
    clip = open_source(CameraConfig(source=f"file:{sample_clip}"), BoardConfig(), paced=False)
    try:
        frames = 0
        while clip.read() is not None:
            frames += 1
        assert frames == 210
    finally:
        clip.release()


def test_gap_shorter_than_the_stall_timeout_keeps_the_session(server, stop):
    """Regression: the read timeout was min(stall, open); a timed-out read kills the capture."""
    camera = rtsp_camera(server.url, stall_timeout_s=3.0, open_timeout_s=1.0)
    capture = start_capture(camera, stop)
    try:
        assert wait_for(lambda: capture.ring.published >= 5, 10), capture.last_error
        server.pause()
        time.sleep(1.8)  # past open_timeout_s, within stall_timeout_s
        before = capture.ring.published
        server.resume()
        assert wait_for(lambda: capture.ring.published > before + 5, 3)
        assert capture.stalls.count() == 0
        assert capture.reconnects.count() == 0
    finally:
        finish(capture, stop, camera)
    assert (server.connections, server.plays) == (1, 1)


def test_stalled_server_is_detected_released_and_reopened(server, stop, log_events):
    # No monitor thread: FFmpeg's read timeout alone must end the blocked read.
    camera = rtsp_camera(server.url, stall_timeout_s=1.0, open_timeout_s=2.0)
    capture = start_capture(camera, stop)
    try:
        assert wait_for(lambda: capture.ring.published >= 5, 10), capture.last_error
        server.pause()
        paused_at = time.monotonic()
        assert wait_for(lambda: capture.stalls.count() >= 1, camera.stall_timeout_s + 3)
        detected_s = time.monotonic() - paused_at
        assert capture.health()[0] == "degraded"
        # Released and reopened while the camera is still quiet: a new session.
        assert wait_for(lambda: server.connections >= 2, 3)
        before = capture.ring.published
        server.resume()
        assert wait_for(lambda: capture.ring.published > before + 5, 10), capture.last_error
        figure("rtsp_stall", detected_s=round(detected_s, 2), stall_timeout_s=1.0)
        assert capture.reconnects.count() >= 1
        assert wait_for(lambda: capture.health()[0] == "ok", 2), capture.health()
        assert wait_for(lambda: server.clients == 1, 3)  # released sessions are closed
    finally:
        finish(capture, stop, camera)
    stalls = [e for e in log_events if e["event"] == "source_stalled"]
    assert stalls[0]["why"] == "read_failed"  # the read returned by itself: not a hang
    assert "source_reconnected" in [e["event"] for e in log_events]


def test_server_that_drops_clients_is_reconnected_at_once(server, stop, log_events):
    """Regression: a closed stream was retried as dead reads until the stall timeout."""
    camera = rtsp_camera(server.url, stall_timeout_s=20.0, open_timeout_s=3.0)
    capture = start_capture(camera, stop)
    try:
        assert wait_for(lambda: capture.ring.published >= 5, 10), capture.last_error
        before = capture.ring.published
        server.drop_clients()
        assert wait_for(lambda: server.plays >= 2, 8), capture.last_error
        assert wait_for(lambda: capture.ring.published > before + 5, 5)
        assert capture.reconnects.count() == 1
        assert capture.stalls.count() == 0
        assert capture.health()[0] == "ok"
    finally:
        finish(capture, stop, camera)
    lost = [e for e in log_events if e["event"] == "source_lost"]
    assert len(lost) == 1
    assert lost[0]["camera"] == "door"


def test_nothing_listening_is_a_clear_open_error(stop, log_events):
    with refused_url() as url:
        camera = rtsp_camera(url, open_timeout_s=2.0)
        start = time.monotonic()
        with pytest.raises(SourceOpenError, match="cannot open rtsp source"):
            open_source(camera, BoardConfig())
        assert time.monotonic() - start < camera.open_timeout_s
        capture = start_capture(camera, stop)
        try:
            assert wait_for(lambda: capture.open_failures >= 3, 5)
            status, detail = capture.health()
            assert status == "down"
            assert "cannot open rtsp source" in detail
            assert capture._thread is not None
            assert capture._thread.is_alive()  # retrying with backoff, not crashed
        finally:
            finish(capture, stop, camera)
    failures = [e for e in log_events if e["event"] == "source_open_failed"]
    assert [e["log_level"] for e in failures[:2]] == ["error", "warning"]
    assert capture.ring.published == 0


def test_listener_that_never_answers_is_an_open_timeout(server, stop):
    """A silent camera fails each open after open_timeout_s and shows why; others still run.

    OpenCV serializes FFmpeg opens behind one process-wide mutex, so the other camera's
    open may wait out one open_timeout_s of the silent one: a bounded delay, not a hang.
    """
    silent = SilentListener()
    quiet = rtsp_camera(silent.url, open_timeout_s=1.0)
    try:
        start = time.monotonic()
        with pytest.raises(SourceOpenError, match="cannot open rtsp source"):
            open_source(quiet, BoardConfig())
        waited_s = time.monotonic() - start
        figure("rtsp_silent_open", waited_s=round(waited_s, 2), open_timeout_s=1.0)
        assert quiet.open_timeout_s * 0.9 <= waited_s < quiet.open_timeout_s + 3

        stuck = rtsp_camera(silent.url, open_timeout_s=2.0).model_copy(update={"name": "stuck"})
        good = rtsp_camera(server.url, open_timeout_s=5.0)
        stuck_capture = start_capture(stuck, stop)
        assert wait_for(lambda: silent.connections >= 2, 3)  # stuck is inside its open now
        good_capture = start_capture(good, stop)
        assert wait_for(lambda: stuck_capture.open_failures >= 1, stuck.open_timeout_s + 3)
        assert stuck_capture.health() == ("down", "camera stuck: cannot open rtsp source")
        assert wait_for(lambda: good_capture.ring.published >= 5, stuck.open_timeout_s + 10)
        assert good_capture.health()[0] == "ok"
        assert stuck_capture._thread is not None
        assert stuck_capture._thread.is_alive()  # still retrying with backoff
    finally:
        stop.set()
        silent.close()
    assert good_capture.join(good.stall_timeout_s + 2)
    assert stuck_capture.join(stuck.open_timeout_s + 2)


def test_diag_sample_of_a_stream_that_drops_reports_the_frames_seen(server):
    """``edge-agent diag``'s camera check keeps what it saw when the stream is lost mid-sample."""
    camera = rtsp_camera(server.url, stall_timeout_s=5.0, open_timeout_s=3.0)
    dropper = threading.Timer(2.0, server.drop_clients)  # open takes ~1.3 s, then frames
    dropper.start()
    try:
        result = check_camera_local(camera, BoardConfig(), window_s=6.0)
    finally:
        dropper.cancel()
    assert result.data["frames"] >= 2, result
    assert result.data["shape"] == [480, 640, 3]
    assert result.status == "warn", result
    assert "the source ended after" in result.detail, result
