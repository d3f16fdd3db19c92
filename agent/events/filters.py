"""Event filters between decoding and publishing: thresholds, NMS, debounce."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from agent.events.nms import nms
from agent.events.types import Detection


def apply_thresholds(
    detections: Sequence[Detection], default: float, per_label: Mapping[str, float]
) -> list[Detection]:
    """Keep detections whose score reaches their label's threshold (or the default)."""
    return [d for d in detections if d.score >= per_label.get(d.label, default)]


def suppress_overlaps(
    detections: Sequence[Detection], iou_threshold: float, max_keep: int
) -> list[Detection]:
    """Class-wise NMS over detections from any decoder, best first."""
    if len(detections) < 2:
        return list(detections)
    boxes = np.array([d.box for d in detections], np.float64)
    scores = np.array([d.score for d in detections], np.float64)
    names = sorted({d.label for d in detections})
    classes = np.array([names.index(d.label) for d in detections], np.int64)
    return [detections[i] for i in nms(boxes, scores, iou_threshold, max_keep, classes=classes)]


class Debouncer:
    """A label reaches events only after it was seen in ``frames`` consecutive inferred frames."""

    def __init__(self, frames: int) -> None:
        self._frames = frames
        self._streak: dict[str, int] = {}

    def __call__(self, detections: Sequence[Detection]) -> list[Detection]:
        seen = {d.label for d in detections}
        # Only labels present in this frame keep a streak: the dict stays bounded.
        self._streak = {label: self._streak.get(label, 0) + 1 for label in seen}
        if self._frames <= 1:
            return list(detections)
        return [d for d in detections if self._streak[d.label] >= self._frames]
