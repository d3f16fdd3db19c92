"""BlazeFace decoding on real photographs through the real LiteRT models."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.assets import find_asset
from agent.config.model import ModelConfig
from agent.errors import DecoderError
from agent.inference.backends.tflite import TfliteBackend
from agent.inference.decoders import make_decoder
from agent.inference.decoders.blazeface import (
    BlazeFaceDecoder,
    anchors_for,
    blend_overlaps,
    layout_for,
)
from agent.inference.preprocess import Preprocessor, Transform
from agent.inference.registry import BackendOptions

MODELS = ["short_range", "full_range", "back"]
# The astronaut's face in astronaut.png (512x512), located by inspecting the photo:
# forehead to chin and ear to ear lie inside this region, its centre near (225, 125).
FACE_REGION = (160.0, 55.0, 290.0, 195.0)


def _model(name: str) -> Path:
    path = find_asset(f"models/face_detection_{name}.tflite")
    assert path is not None
    return path


def _image(name: str) -> np.ndarray:
    path = find_asset(f"images/{name}")
    assert path is not None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="module")
def backends():
    loaded = {name: TfliteBackend(_model(name), BackendOptions(threads=1)) for name in MODELS}
    yield loaded
    for backend in loaded.values():
        backend.close()


def _detect(backend, image, mode="squash", threshold=0.6):
    cfg = ModelConfig(threshold=threshold, resize_mode=mode)
    pre = Preprocessor(backend.input_spec, mode)
    decoder = make_decoder(cfg, backend.input_spec, backend.output_specs)
    tensor = backend.input_buffer()
    transform = pre.prepare(image, tensor)
    return decoder(backend.infer(tensor), transform)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mode", ["squash", "letterbox", "crop"])
def test_one_face_on_astronaut_where_the_face_is(backends, model, mode):
    detections = _detect(backends[model], _image("astronaut.png"), mode)
    assert len(detections) == 1
    face = detections[0]
    assert face.label == "face"
    assert face.score > 0.8
    x1, y1, x2, y2 = face.box
    rx1, ry1, rx2, ry2 = FACE_REGION
    assert rx1 <= x1 < x2 <= rx2
    assert ry1 <= y1 < y2 <= ry2
    # Not a sliver: the box covers most of the face's width.
    assert 70 <= x2 - x1 <= 130


@pytest.mark.parametrize("model", ["short_range", "full_range"])
@pytest.mark.parametrize("photo", ["coffee.png", "chelsea.png", "rocket.jpg"])
def test_no_face_on_photos_without_people(backends, model, photo):
    assert _detect(backends[model], _image(photo)) == []


def test_box_follows_the_face_in_a_letterboxed_wide_frame(backends):
    # Paste the photo at an offset into a wide 16:9 canvas: the box must move with it.
    photo = _image("astronaut.png")
    canvas = np.zeros((720, 1280, 3), np.uint8)
    canvas[100:612, 600:1112] = photo
    detections = _detect(backends["full_range"], canvas, "letterbox")
    assert len(detections) == 1
    x1, y1, x2, y2 = detections[0].box
    rx1, ry1, rx2, ry2 = FACE_REGION
    assert 600 + rx1 <= x1 < x2 <= 600 + rx2
    assert 100 + ry1 <= y1 < y2 <= 100 + ry2


def test_anchor_layouts_of_the_published_models(backends):
    for name, backend in backends.items():
        size = backend.input_spec.width
        anchors = backend.output_specs[0].shape[1]
        centres = anchors_for(size, anchors)
        assert centres.shape == (anchors, 2)
        assert centres.min() > 0
        assert centres.max() < 1, name
    assert layout_for(128, 896) == ((8, 2), (16, 6))
    assert layout_for(192, 2304) == ((4, 1),)
    assert layout_for(256, 896) == ((16, 2), (32, 6))
    with pytest.raises(DecoderError):
        layout_for(128, 1000)


def test_overlapping_candidates_blend_by_score_and_disjoint_ones_stay_apart():
    boxes = [
        [0.10, 0.10, 0.30, 0.30],  # face A, best
        [0.12, 0.10, 0.32, 0.30],  # face A, neighbouring anchor
        [0.60, 0.60, 0.80, 0.80],  # face B
    ]
    scores = [0.9, 0.6, 0.7]
    kept = blend_overlaps(boxes, scores, iou_threshold=0.3, max_keep=10)
    assert [score for _, score in kept] == [0.9, 0.7]  # best first, the best one's score
    blended, _ = kept[0]
    x1 = (0.10 * 0.9 + 0.12 * 0.6) / 1.5
    assert blended == pytest.approx((x1, 0.10, x1 + 0.20, 0.30))
    assert kept[1][0] == pytest.approx(tuple(boxes[2]))
    assert len(blend_overlaps(boxes, scores, iou_threshold=0.3, max_keep=1)) == 1
    assert blend_overlaps([], [], 0.3, 10) == []


def test_outputs_no_layout_fits_are_refused_at_the_first_frame_face_or_not():
    """The layout is checked once per output shape: a frame without a face does not let an
    anchor count no published model has (or too few box columns) through unnoticed."""
    transform = Transform(128.0, 0.0, 128.0, 0.0, 128, 128)  # a 128 px frame, as is
    decoder = BlazeFaceDecoder(128, 0.5, 0.3, 10)
    no_face = np.full((1, 1000, 1), -10.0, np.float32)
    with pytest.raises(DecoderError, match="1000 anchors"):
        decoder([np.zeros((1, 1000, 16), np.float32), no_face], transform)
    with pytest.raises(DecoderError, match="expects"):
        decoder([np.zeros((1, 896, 3), np.float32), np.zeros((1, 896, 1), np.float32)], transform)
    # The published layout, either output order: no face, and one anchor's face.
    logits = np.full((1, 896, 1), -10.0, np.float32)
    regressors = np.zeros((1, 896, 16), np.float32)
    assert decoder([regressors, logits], transform) == []
    anchor = (8 * 16 + 8) * 2  # stride 8: 16x16 cells of 2 anchors, row 8, column 8
    logits[0, anchor, 0] = 5.0
    regressors[0, anchor, :4] = [1.0, -2.0, 16.0, 12.0]  # centre offset, width, height (px)
    (face,) = decoder([logits, regressors], transform)
    assert face.score == pytest.approx(1 / (1 + np.exp(-5.0)))
    centre = 8.5 / 16 * 128  # that cell's centre, in input pixels
    expected = (centre + 1 - 8, centre - 2 - 6, centre + 1 + 8, centre - 2 + 6)
    assert face.box == pytest.approx(expected, abs=1e-4)
