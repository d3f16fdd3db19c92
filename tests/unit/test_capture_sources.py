"""Source strings, OpenCV sources on the real sample clip and photos, and the frame ring."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agent.capture import open_source
from agent.capture.ring import FrameRing
from agent.capture.sources import APPSINK, ensure_appsink, parse_source
from agent.config.board import BoardConfig
from agent.config.camera import CameraConfig
from agent.errors import SourceOpenError, SourceSpecError

BOARD = BoardConfig()
JETSON = BoardConfig(
    name="jetson",
    csi_pipeline=(
        "nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM),width={width},"
        "height={height},framerate={fps}/1 ! nvvidconv ! video/x-raw,format=BGRx ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink"
    ),
)


def test_parse_each_scheme():
    def spec(source, board=BOARD):
        return parse_source(CameraConfig(source=source), board)

    assert spec("file:/srv/a.mp4").kind == "file"
    assert spec("images:/srv/dir").target == "/srv/dir"
    assert spec("v4l2:/dev/video2").target == "/dev/video2"
    assert spec("rtsp://cam/stream").kind == "rtsp"
    gst = spec("gst:videotestsrc ! videoconvert")
    assert gst.target == f"videotestsrc ! videoconvert ! {APPSINK}"
    csi = spec("csi:1", JETSON)
    assert "sensor-id=1" in csi.target
    assert "width=1280" in csi.target
    assert csi.target.endswith(APPSINK)
    assert csi.target.count("appsink") == 1
    with pytest.raises(SourceSpecError):
        spec("csi:0")  # x86 profile has no CSI template
    with pytest.raises(SourceSpecError):
        spec("csi:front", JETSON)
    with pytest.raises(SourceSpecError):
        spec("file:")


def test_appsink_is_replaced_not_duplicated():
    assert ensure_appsink("a ! appsink max-buffers=100") == f"a ! {APPSINK}"
    assert ensure_appsink("a ! b") == f"a ! b ! {APPSINK}"


def test_file_source_reads_every_frame_then_ends(sample_clip):
    source = open_source(CameraConfig(source=f"file:{sample_clip}"), BOARD, paced=False)
    assert source.nominal_fps == pytest.approx(15.0)
    frames = 0
    while (image := source.read()) is not None:
        assert image.shape == (480, 640, 3)
        assert image.dtype == np.uint8
        frames += 1
    assert frames == 210
    assert source.ended
    source.release()


def test_file_source_loops(sample_clip):
    source = open_source(CameraConfig(source=f"file:{sample_clip}", loop=True), BOARD, paced=False)
    frames = sum(1 for _ in range(260) if source.read() is not None)
    assert frames == 260
    assert not source.ended
    source.release()


def test_file_source_is_paced_to_its_fps(sample_clip):
    source = open_source(CameraConfig(source=f"file:{sample_clip}"), BOARD)
    start = time.monotonic()
    for _ in range(7):
        assert source.read() is not None
    # Six frame periods at 15 fps at least; an upper bound would be a timing assertion.
    assert time.monotonic() - start >= 6 / 15 - 0.02
    source.release()


def test_images_directory_source(images_dir):
    camera = CameraConfig(source=f"images:{images_dir}", fps=200)
    source = open_source(camera, BOARD)
    shapes = []
    while (image := source.read()) is not None:
        shapes.append(image.shape)
    assert len(shapes) == 6
    assert source.ended
    assert (512, 512, 3) in shapes


def test_unopenable_sources(tmp_path):
    with pytest.raises(SourceOpenError):
        open_source(CameraConfig(source=f"file:{tmp_path}/missing.mp4"), BOARD)
    with pytest.raises(SourceOpenError):
        open_source(CameraConfig(source=f"images:{tmp_path}"), BOARD)  # empty
    not_video = tmp_path / "clip.mp4"
    not_video.write_bytes(b"\x00" * 4096)
    with pytest.raises(SourceOpenError):
        open_source(CameraConfig(source=f"file:{not_video}"), BOARD)


def test_ring_newest_frame_never_twice_and_overwrites_counted():
    ring = FrameRing("cam", slots=3, consumers=2)
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(6)]
    ring.publish(frames[0])
    first = ring.take(0)
    assert first is not None
    assert first.seq == 1
    assert ring.take(0) is None  # never the same frame twice
    for image in frames[1:4]:
        ring.publish(image)
    newest = ring.take(0)
    assert newest is not None
    assert newest.seq == 4
    assert int(newest.image[0, 0, 0]) == 3
    # Consumer 0 missed frames 2 and 3; consumer 1 missed 1, 2 and 3.
    assert ring.overwritten == [2, 3]
    # A pinned slot is not overwritten while its consumer still reads it.
    for image in frames[4:]:
        ring.publish(image)
    assert int(newest.image[0, 0, 0]) == 3
    other = ring.take(1)
    assert other is not None
    assert other.seq == 6
    assert ring.published == 6


def test_ring_take_waits_for_a_frame():
    ring = FrameRing("cam")
    assert ring.take(0, timeout_s=0.05) is None
    ring.publish(np.zeros((2, 2, 3), np.uint8))
    frame = ring.take(0, timeout_s=1.0)
    assert frame is not None
    assert frame.camera == "cam"
