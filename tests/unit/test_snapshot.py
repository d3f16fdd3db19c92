"""Snapshots: the newest frame of a ring / pipeline, and size-bounded JPEG encoding."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.assets import find_asset
from agent.capture.ring import FrameRing
from agent.config.root import AgentConfig
from agent.errors import CommandError, Reason
from agent.pipeline.runner import Pipeline
from agent.uplink.snapshot import encode_bounded
from tests.unit.test_capture_worker import wait_for


def test_ring_latest_copy_is_the_newest_frame_and_a_copy() -> None:
    ring = FrameRing("door", slots=3, consumers=1)
    assert ring.latest_copy() is None
    first = np.full((4, 6, 3), 1, np.uint8)
    second = np.full((4, 6, 3), 2, np.uint8)
    ring.publish(first)
    ring.publish(second)
    copy = ring.latest_copy()
    assert copy is not None
    assert np.array_equal(copy, second)
    copy[:] = 9  # the ring's slot is not affected
    again = ring.latest_copy()
    assert again is not None
    assert np.array_equal(again, second)


def test_pipeline_latest_frame_is_the_clips_last_frame(sample_clip: Path, tmp_path: Path) -> None:
    cfg = AgentConfig.model_validate(
        {
            "storage": {"state_dir": str(tmp_path)},
            "cameras": [{"name": "door", "source": f"file:{sample_clip}"}],
        }
    )
    pipeline = Pipeline(cfg, lambda _e: None, tmp_path, paced=False)
    assert pipeline.latest_frame("door") is None
    pipeline.start()
    try:
        assert wait_for(pipeline.sources_ended, 20.0)
        frame = pipeline.latest_frame("door")
    finally:
        pipeline.stop()
    assert pipeline.latest_frame("nope") is None
    capture = cv2.VideoCapture(str(sample_clip))
    last = None
    while True:
        ok, image = capture.read()
        if not ok:
            break
        last = image
    capture.release()
    assert frame is not None
    assert last is not None
    assert np.array_equal(frame, last)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    path = find_asset("images/astronaut.png")
    assert path is not None
    image = cv2.imread(str(path))
    assert image is not None
    return image


def test_roomy_budget_keeps_full_size_and_quality(photo: np.ndarray) -> None:
    snap = encode_bounded(photo, 1_000_000, quality=85)
    assert (snap.width, snap.height, snap.quality, snap.scale) == (
        photo.shape[1],
        photo.shape[0],
        85,
        1.0,
    )
    decoded = cv2.imdecode(np.frombuffer(snap.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == photo.shape
    result = snap.to_result("door")
    assert base64.b64decode(result["jpeg_b64"]) == snap.jpeg
    assert result["bytes"] == len(snap.jpeg)


def test_tight_budget_lowers_quality_then_downscales(photo: np.ndarray) -> None:
    full = encode_bounded(photo, 10_000_000).jpeg
    snap = encode_bounded(photo, len(full) // 2)
    assert len(snap.jpeg) <= len(full) // 2
    assert snap.quality < 85 or snap.scale < 1.0
    tiny = encode_bounded(photo, 4000)
    assert len(tiny.jpeg) <= 4000
    assert tiny.scale < 1.0
    decoded = cv2.imdecode(np.frombuffer(tiny.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (tiny.height, tiny.width)


def test_impossible_budget_is_too_large(photo: np.ndarray) -> None:
    with pytest.raises(CommandError) as info:
        encode_bounded(photo, 100)
    assert info.value.reason is Reason.TOO_LARGE
