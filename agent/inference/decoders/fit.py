"""Does a model fit a decoder family? Pure checks on tensor specs, made once at load.

Each ``*_problem`` function returns None when the model's outputs fit that family,
otherwise one sentence saying what the family expects and what it saw. ``check_fit``
turns a problem into ``DecoderMismatchError`` naming the tensors and the families
that would fit, so a wrong model is refused at load instead of failing every frame.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agent.errors import DecoderMismatchError
from agent.inference.base import InputSpec, TensorSpec
from agent.inference.decoders.blazeface import KNOWN_LAYOUTS, anchor_count

FAMILIES = ("blazeface", "ssd_postprocess", "yolo", "classify")
BLAZEFACE_KEYPOINTS = 6  # eyes, nose tip, mouth, ear tragions: 4 box + 12 keypoint values
BLAZEFACE_COLUMNS = 4 + 2 * BLAZEFACE_KEYPOINTS
YOLO_MIN_COLUMNS = 5  # 4 box values and at least one class


def describe(spec: TensorSpec) -> str:
    """``name dtype[shape]`` plus the quantisation when there is one."""
    text = f"{spec.name} {spec.dtype}{list(spec.shape)}"
    if spec.scale:
        text += f" q(scale={spec.scale:.6g}, zero_point={spec.zero_point})"
    return text


def _size(spec: TensorSpec) -> int:
    return int(np.prod(spec.shape)) if spec.shape else 1


def _inner(spec: TensorSpec) -> tuple[int, ...]:
    """The shape without leading 1s (batch and singleton axes)."""
    shape = list(spec.shape)
    while len(shape) > 1 and shape[0] == 1:
        shape.pop(0)
    return tuple(shape)


def blazeface_problem(input_spec: InputSpec, outputs: list[TensorSpec]) -> str | None:
    size = input_spec.width
    if input_spec.width != input_spec.height:
        return f"blazeface needs a square input, model input is {list(input_spec.tensor.shape)}"
    if len(outputs) != 2:
        return f"blazeface expects 2 outputs (regressors, scores), model has {len(outputs)}"
    regressors, scores = sorted(outputs, key=lambda s: -_inner(s)[-1])
    reg, sco = _inner(regressors), _inner(scores)
    if len(reg) != 2 or sco[-1] != 1 or _size(scores) != reg[0]:
        return (
            f"blazeface expects [1,N,{BLAZEFACE_COLUMNS}] regressors and [1,N,1] scores, "
            f"got {list(regressors.shape)} and {list(scores.shape)}"
        )
    anchors, columns = reg
    known = sorted({anchor_count(size, layout) for layout in KNOWN_LAYOUTS})
    if anchors not in known:
        return (
            f"blazeface expects N in {known} anchors for a {size}px input (MediaPipe face "
            f"layouts), got {list(regressors.shape)}: a different anchor layout"
        )
    if columns != BLAZEFACE_COLUMNS:
        return (
            f"blazeface expects [1,N,{BLAZEFACE_COLUMNS}] regressors (box and "
            f"{BLAZEFACE_KEYPOINTS} face keypoints), got {list(regressors.shape)}: "
            f"{(columns - 4) // 2} keypoints, not a face detector (a MediaPipe palm detector has 7)"
        )
    return None


def ssd_problem(input_spec: InputSpec, outputs: list[TensorSpec]) -> str | None:
    del input_spec  # boxes are normalised: any input size fits
    if len(outputs) != 4:
        return (
            "ssd_postprocess expects 4 outputs (boxes, classes, scores, count), "
            f"model has {len(outputs)}"
        )
    boxes = [s for s in outputs if len(_inner(s)) == 2 and _inner(s)[-1] == 4]
    count = [s for s in outputs if _size(s) == 1]
    if len(boxes) != 1 or len(count) != 1:
        return "ssd_postprocess expects one [1,N,4] boxes output and one [1] count output"
    detections = _inner(boxes[0])[0]
    rest = [s for s in outputs if s is not boxes[0] and s is not count[0]]
    if any(_inner(s) != (detections,) for s in rest):
        return f"ssd_postprocess expects classes and scores of [1,{detections}]"
    return None


def yolo_problem(input_spec: InputSpec, outputs: list[TensorSpec]) -> str | None:
    del input_spec
    if len(outputs) != 1:
        return f"yolo expects 1 output ([1,4+C,N] or [1,N,4+C]), model has {len(outputs)}"
    shape = outputs[0].shape
    if len(shape) != 3 or shape[0] != 1:
        return f"yolo expects a [1,4+C,N] or [1,N,4+C] output, got {list(shape)}"
    columns, predictions = sorted(shape[1:])
    if columns < YOLO_MIN_COLUMNS or predictions <= columns:
        return f"yolo expects 4 box values + classes per prediction, got {list(shape)}"
    return None


def classify_problem(input_spec: InputSpec, outputs: list[TensorSpec]) -> str | None:
    del input_spec
    if len(outputs) != 1:
        return f"classify expects 1 output of class scores [1,C], model has {len(outputs)}"
    inner = _inner(outputs[0])
    if len(inner) != 1 or inner[0] < 2:
        return f"classify expects one [1,C] output of class scores, got {list(outputs[0].shape)}"
    return None


PROBLEMS: dict[str, Callable[[InputSpec, list[TensorSpec]], str | None]] = {
    "blazeface": blazeface_problem,
    "ssd_postprocess": ssd_problem,
    "yolo": yolo_problem,
    "classify": classify_problem,
}


def fitting_families(input_spec: InputSpec, outputs: list[TensorSpec]) -> list[str]:
    """Every decoder family whose checks these outputs pass, in ``FAMILIES`` order."""
    return [name for name in FAMILIES if PROBLEMS[name](input_spec, outputs) is None]


def check_fit(
    decoder: str, input_spec: InputSpec, outputs: list[TensorSpec], model: str = ""
) -> None:
    """Raise ``DecoderMismatchError`` unless the outputs fit ``decoder``."""
    problem = PROBLEMS[decoder](input_spec, outputs)
    if problem is None:
        return
    seen = [describe(s) for s in outputs]
    fits = [name for name in fitting_families(input_spec, outputs) if name != decoder]
    hint = f"; decoder {' or '.join(fits)} would fit" if fits else "; no decoder family fits"
    raise DecoderMismatchError(
        f"model does not fit decoder {decoder}: {problem}; outputs seen: {', '.join(seen)}{hint}",
        decoder=decoder,
        outputs=seen,
        fits=fits,
        model=model,
    )
