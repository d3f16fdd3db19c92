"""The ONNX backend inside the shared pipeline pieces: real image, preprocess, classify decoder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.assets import find_asset
from agent.inference.decoders.classify import ClassifyDecoder
from agent.inference.preprocess import Preprocessor
from agent.inference.registry import BackendOptions, create_backend

LABELS = {0: "0", 1: "180"}


def text_line_on_photo() -> np.ndarray:
    """A 96x384 crop of a real photo with a white label carrying dark text."""
    path = find_asset("images/rocket.jpg")
    assert path is not None, "run tools/fetch_assets.py"
    photo = cv2.imread(str(path))
    crop = cv2.resize(photo, (384, 96))
    cv2.rectangle(crop, (0, 8), (383, 88), (245, 245, 245), -1)
    cv2.putText(crop, "Launch pad 39A", (10, 66), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (20, 20, 20), 3)
    return crop


@pytest.mark.parametrize(("rotate", "label"), [(False, "0"), (True, "180")])
def test_text_orientation_through_preprocess_backend_and_decoder(rotate: bool, label: str) -> None:
    model = find_asset("models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    assert model is not None
    backend = create_backend("onnx", model, BackendOptions(threads=1, input_size=(48, 192)))
    try:
        # PaddleOCR's classifier was trained on BGR scaled to [-1, 1].
        prep = Preprocessor(backend.input_spec, "squash", "bgr", "-1_1")
        decoder = ClassifyDecoder(LABELS, score_threshold=0.5, top_k=1)
        image = text_line_on_photo()
        if rotate:
            image = cv2.rotate(image, cv2.ROTATE_180)
        tensor = backend.input_buffer()
        transform = prep.prepare(image, tensor)
        detections = decoder(backend.infer(tensor), transform)
    finally:
        backend.close()
    assert [d.label for d in detections] == [label]
    assert detections[0].score > 0.9
    assert detections[0].box == pytest.approx((0.0, 0.0, 384.0, 96.0))
