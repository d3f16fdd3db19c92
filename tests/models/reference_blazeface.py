"""MediaPipe face detection post-processing, written from MediaPipe's published graphs.

An independent reimplementation (numpy, run directly on the interpreter) of what
``face_detection_short_range.pbtxt`` / ``face_detection_full_range.pbtxt`` do:
ImageToTensorCalculator (keep_aspect_ratio, -1..1, zero border),
SsdAnchorsCalculator, TensorsToDetectionsCalculator, NonMaxSuppressionCalculator
(WEIGHTED, IoU 0.3) and DetectionLetterboxRemovalCalculator. Nothing here is shared
with agent/inference: anchors come from the calculator's own loop, not from a
layout table, and NMS blends boxes as MediaPipe does instead of keeping the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FaceGraph:
    input_size: int
    num_layers: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_score_thresh: float
    min_scale: float = 0.1484375
    max_scale: float = 0.75


SHORT_RANGE = FaceGraph(128, 4, (8, 16, 16, 16), 1.0, 0.5)
FULL_RANGE = FaceGraph(192, 1, (4,), 0.0, 0.6)


def _scale(graph: FaceGraph, index: int) -> float:
    if graph.num_layers == 1:
        return (graph.min_scale + graph.max_scale) * 0.5
    return graph.min_scale + (graph.max_scale - graph.min_scale) * index / (graph.num_layers - 1)


def ssd_anchors(graph: FaceGraph) -> np.ndarray:
    """[N, 2] anchor centres, SsdAnchorsCalculator with fixed_anchor_size (w = h = 1)."""
    anchors: list[tuple[float, float]] = []
    layer = 0
    while layer < graph.num_layers:
        per_cell = 0
        last = layer
        while last < graph.num_layers and graph.strides[last] == graph.strides[layer]:
            per_cell += 1  # aspect_ratios = [1.0]
            if graph.interpolated_scale_aspect_ratio > 0:
                per_cell += 1
            _scale(graph, last)  # scales only size the anchors, and they are fixed here
            last += 1
        stride = graph.strides[layer]
        cells = math.ceil(graph.input_size / stride)
        for y in range(cells):
            for x in range(cells):
                anchors.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell)
        layer = last
    return np.array(anchors, np.float64)


def letterbox(image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """RGB -1..1 tensor [1, size, size, 3] and the (x, y) padding fractions of each side."""
    h, w = image_bgr.shape[:2]
    scale = min(size / w, size / h)
    new_w, new_h = round(w * scale), round(h * scale)
    canvas = np.zeros((size, size, 3), np.uint8)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(image_bgr, (new_w, new_h))
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32)
    tensor = (rgb / 127.5 - 1.0)[None]
    return tensor, (left / size, top / size)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.3) -> list:
    order = list(np.argsort(-scores))
    out = []
    while order:
        top = order[0]
        rest = np.array(order[1:], int)
        overlap = _iou(boxes[top], boxes[rest]) if rest.size else np.zeros(0)
        group = [top, *rest[overlap > threshold].tolist()]
        weights = scores[group]
        box = (boxes[group] * weights[:, None]).sum(axis=0) / weights.sum()
        out.append((box, float(scores[top])))
        order = rest[overlap <= threshold].tolist()
    return out


def detect(interpreter, graph: FaceGraph, image_bgr: np.ndarray) -> list[tuple[list[float], float]]:
    """[(box x1, y1, x2, y2 in image pixels, score)], best first."""
    tensor, (pad_x, pad_y) = letterbox(image_bgr, graph.input_size)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    outs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    raw_boxes = next(o for o in outs if o.shape[-1] == 16)[0].astype(np.float64)
    raw_scores = next(o for o in outs if o.shape[-1] == 1)[0, :, 0].astype(np.float64)
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -100.0, 100.0)))
    keep = scores >= graph.min_score_thresh
    anchors = ssd_anchors(graph)[keep]
    raw = raw_boxes[keep] / graph.input_size
    cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    img_h, img_w = image_bgr.shape[:2]
    result = []
    for box, score in weighted_nms(boxes, scores[keep]):
        # DetectionLetterboxRemovalCalculator, then to pixels.
        x1 = (box[0] - pad_x) / (1 - 2 * pad_x) * img_w
        x2 = (box[2] - pad_x) / (1 - 2 * pad_x) * img_w
        y1 = (box[1] - pad_y) / (1 - 2 * pad_y) * img_h
        y2 = (box[3] - pad_y) / (1 - 2 * pad_y) * img_h
        result.append(([x1, y1, x2, y2], score))
    return result
