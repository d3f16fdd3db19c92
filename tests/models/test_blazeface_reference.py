"""BlazeFace short and full range, as `model inspect` configures them, against MediaPipe's graph.

The reference (tests/models/reference_blazeface.py) is MediaPipe's published
post-processing written out in numpy and run directly on the interpreter. Frames:
the square astronaut and cameraman photographs, a 2.5:1 frame (astronaut beside the
coffee photograph, where letterbox and squash differ) and a 4:3 frame of the sample
clip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from agent.config.model import ModelConfig
from tests.models import reference_blazeface as reference
from tests.models.support import Slot, asset, compare, inspected, open_slot, photo, wide_frame

MODELS = {
    "models/face_detection_short_range.tflite": reference.SHORT_RANGE,
    "models/face_detection_full_range.tflite": reference.FULL_RANGE,
    # MediaPipe's own copy: the same network with TFLite metadata (normalisation options).
    "models/zoo/mediapipe_face_detection_short_range.tflite": reference.SHORT_RANGE,
}


def clip_frame(index: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(asset("clips/sample.mp4")))
    try:
        for _ in range(index + 1):
            ok, frame = capture.read()
            assert ok
    finally:
        capture.release()
    return frame


FRAMES = {
    "astronaut": lambda: photo("astronaut.png"),
    "camera": lambda: photo("camera.png"),
    "wide": wide_frame,
    "clip": lambda: clip_frame(10),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model_pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Slot, Interpreter, reference.FaceGraph]]:
    path = asset(request.param)
    model, block = inspected(path, tmp_path_factory.mktemp("cfg"))
    assert 'decoder = "blazeface"' in block
    assert 'resize_mode = "letterbox"' in block
    slot = open_slot(model)
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    yield slot, interpreter, MODELS[request.param]
    slot.close()


@pytest.mark.parametrize("frame_name", list(FRAMES))
def test_faces_match_mediapipe(model_pair, frame_name: str) -> None:
    slot, interpreter, graph = model_pair
    frame = FRAMES[frame_name]()
    ours = slot.detect(frame)
    ref = [("face", box, score) for box, score in reference.detect(interpreter, graph, frame)]
    result = compare(ours, ref, slot.model.threshold)
    result.assert_within()


def test_metadata_normalisation_is_used_and_logged(tmp_path: Path, log_events) -> None:
    model, block = inspected(
        asset("models/zoo/mediapipe_face_detection_short_range.tflite"), tmp_path
    )
    assert 'input_range = "-1_1"  # model metadata' in block
    # A config that does not say: the file's NormalizationOptions decide, and the log says so.
    slot = open_slot(ModelConfig(path=model.path, decoder="blazeface"))
    slot.close()
    plan = next(e for e in log_events if e["event"] == "model_input_plan")
    assert plan["sources"]["normalisation"] == "model metadata"
    assert plan["metadata"] == ["TFLITE_METADATA", "normalization"]


def test_squash_distorts_a_wide_frame(tmp_path: Path) -> None:
    """Why letterbox is the default: squashed, the 2.5:1 frame's face box loses its shape."""
    path = asset("models/face_detection_short_range.tflite")
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    frame = wide_frame()
    ref = [("face", b, s) for b, s in reference.detect(interpreter, reference.SHORT_RANGE, frame)]
    model, _ = inspected(path, tmp_path, resize_mode="squash")
    slot = open_slot(model)
    try:
        result = compare(slot.detect(frame), ref, model.threshold)
    finally:
        slot.close()
    assert result.missed or result.worst_iou < 0.85
