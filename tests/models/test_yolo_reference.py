"""A YOLOv8n head (NudeNet 3.4.2's 320n.onnx) against NudeNet's own pre- and post-processing.

`model inspect` reads what the file says (Ultralytics metadata: labels, imgsz, 0..1
input) and suggests letterbox. Two things NudeNet's code does are nowhere in the file
and are set by hand, as a user reading that code would: it feeds BGR (its
``COLOR_RGBA2BGR`` then ``swapRB=True`` swap twice) and its NMS ignores classes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.models.support import Slot, asset, compare, inspected, open_slot, photo, wide_frame

FRAMES = {
    "astronaut": lambda: photo("astronaut.png"),
    "camera": lambda: photo("camera.png"),
    "wide": wide_frame,
    "chelsea": lambda: photo("chelsea.png"),  # nothing for this model: both must agree
    "motorcycle": lambda: photo("motorcycle.png"),
}
AS_NUDENET_RUNS_IT = {"color_order": "bgr", "agnostic_nms": True}


@pytest.fixture(scope="module")
def nudenet() -> object:
    from tests.models.support import reference_module

    module = reference_module("nudenet")
    return module.NudeDetector(model_path=str(asset("models/zoo/nudenet_320n.onnx")))


@pytest.fixture(scope="module")
def slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slot]:
    model, block = inspected(
        asset("models/zoo/nudenet_320n.onnx"), tmp_path_factory.mktemp("cfg"), **AS_NUDENET_RUNS_IT
    )
    for line in (
        'decoder = "yolo"',
        'resize_mode = "letterbox"',
        'input_range = "0_1"  # model metadata',
        "input_size = [320, 320]  # imgsz in metadata",
    ):
        assert line in block
    opened = open_slot(model)
    yield opened
    opened.close()


def reference_detections(
    nudenet: object, frame: np.ndarray
) -> list[tuple[str, list[float], float]]:
    found = nudenet.detect(frame)  # type: ignore[attr-defined]
    return [
        (
            d["class"],
            [d["box"][0], d["box"][1], d["box"][0] + d["box"][2], d["box"][1] + d["box"][3]],
            d["score"],
        )
        for d in found
    ]


@pytest.mark.parametrize("frame_name", list(FRAMES))
def test_boxes_match_nudenet(slot: Slot, nudenet: object, frame_name: str) -> None:
    frame = FRAMES[frame_name]()
    reference = reference_detections(nudenet, frame)
    ours = slot.detect(frame)
    result = compare(ours, reference, slot.model.threshold)
    if not reference and not ours:
        return
    result.assert_within()


def test_labels_come_from_the_file(slot: Slot) -> None:
    labels = {d.label for d in slot.detect(photo("astronaut.png"))}
    assert labels == {"FACE_FEMALE"}
