"""Greedy non-maximum suppression on numpy arrays (pure)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def iou_one_to_many(
    box: npt.NDArray[np.floating], boxes: npt.NDArray[np.floating]
) -> npt.NDArray[np.float64]:
    """IoU of one x1, y1, x2, y2 box with each row of ``boxes``."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(
    boxes: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
    iou_threshold: float,
    max_keep: int = 100,
    classes: npt.NDArray[np.integer] | None = None,
) -> list[int]:
    """Indices of kept boxes, best first; with ``classes`` boxes only suppress their own class."""
    if len(boxes) == 0:
        return []
    work = np.asarray(boxes, np.float64)
    if classes is not None:
        # Shift each class to its own region so boxes of different classes never overlap.
        span = float(np.max(work) - np.min(work)) + 1.0
        work = work + (np.asarray(classes, np.float64) * span)[:, None]
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(work[best], work[rest]) <= iou_threshold]
    return keep
