"""BlazeFace (MediaPipe face detection): SSD anchors, box regressors and score logits.

Anchors follow MediaPipe's SsdAnchorsCalculator with ``fixed_anchor_size``: every
anchor is 1x1 (normalised) at its cell centre, so only the feature-map layout
matters. Layouts of the three published models, told apart by input size and anchor
count: short-range 128 px (strides 8/16, 896 anchors), full-range 192 px (stride 4,
2304 anchors) and back-camera 256 px (strides 16/32, 896 anchors).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from agent.errors import DecoderError
from agent.events.types import Detection
from agent.inference.decoders.common import FloatArray
from agent.inference.preprocess import Transform

# (stride, anchors per cell) for each distinct feature map, in output order.
Layout = tuple[tuple[int, int], ...]
KNOWN_LAYOUTS: tuple[Layout, ...] = (
    ((8, 2), (16, 6)),  # short-range, 128 px
    ((16, 2), (32, 6)),  # back camera, 256 px
    ((4, 1),),  # full-range, 192 px
)


def anchor_count(input_size: int, layout: Layout) -> int:
    return sum((input_size // stride) ** 2 * per_cell for stride, per_cell in layout)


def layout_for(input_size: int, num_anchors: int) -> Layout:
    """The anchor layout of a BlazeFace-style model, from its input size and anchor count."""
    for layout in KNOWN_LAYOUTS:
        if anchor_count(input_size, layout) == num_anchors:
            return layout
    raise DecoderError(
        f"no BlazeFace anchor layout gives {num_anchors} anchors for a {input_size}px input"
    )


@functools.lru_cache(maxsize=8)
def anchors_for(input_size: int, num_anchors: int) -> FloatArray:
    """[num_anchors, 2] anchor centres (x, y), normalised."""
    centres: list[FloatArray] = []
    for stride, per_cell in layout_for(input_size, num_anchors):
        cells = input_size // stride
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(grid, grid)  # row-major: y outer, x inner, as MediaPipe emits
        xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(xy, per_cell, axis=0))
    anchors = np.concatenate(centres).astype(np.float32)
    anchors.setflags(write=False)
    return anchors


@functools.lru_cache(maxsize=8)
def anchor_corners_for(input_size: int, num_anchors: int) -> FloatArray:
    """[num_anchors, 4] anchor centres as x, y, x, y: the offset of every decoded box."""
    anchors = anchors_for(input_size, num_anchors)
    corners = np.concatenate([anchors, anchors], axis=1)
    corners.setflags(write=False)
    return corners


class BlazeFaceDecoder:
    """Raw outputs → face boxes in frame pixels, with few numpy calls per frame.

    Decoding runs once per inferred frame, so its fixed cost counts: most frames have
    no face (one ``max`` over the logits decides that), and a face frame has a handful
    of candidate anchors, decoded with one matrix product and blended in plain Python.
    """

    def __init__(
        self,
        input_size: int,
        score_threshold: float,
        iou_threshold: float,
        max_detections: int,
        label: str = "face",
    ) -> None:
        self._size = input_size
        clipped = min(max(score_threshold, 1e-6), 1 - 1e-6)
        self._logit_threshold = float(np.log(clipped / (1 - clipped)))
        self._iou = iou_threshold
        self._max = max_detections
        self._label = label
        # cx, cy, w, h (pixels of the input) → x1, y1, x2, y2 (normalised), as one product.
        k = 1.0 / input_size
        self._to_corners = np.array(
            [[k, 0, k, 0], [0, k, 0, k], [-k / 2, 0, k / 2, 0], [0, -k / 2, 0, k / 2]],
            np.float32,
        )

    def decode_normalised(
        self, regressors: FloatArray, logits: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Boxes (normalised x1, y1, x2, y2 of the model input) and scores above the threshold."""
        raw = regressors.reshape(-1, regressors.shape[-1])
        flat_logits = logits.reshape(-1)
        if raw.shape[0] != flat_logits.shape[0] or raw.shape[1] < 4:
            raise DecoderError(
                f"blazeface expects [1,N,>=4] and [1,N,1] outputs, got {regressors.shape} "
                f"and {logits.shape}"
            )
        # Compare in logit space: only the few anchors that pass get a sigmoid.
        if flat_logits.size == 0 or float(flat_logits.max()) < self._logit_threshold:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        keep = np.flatnonzero(flat_logits >= self._logit_threshold)
        # No clip needed: every kept logit is above the threshold's, so exp cannot overflow.
        scores = (1.0 / (1.0 + np.exp(-flat_logits[keep]))).astype(np.float32, copy=False)
        corners = anchor_corners_for(self._size, raw.shape[0])
        boxes = raw[keep, :4] @ self._to_corners + corners[keep]
        return boxes.astype(np.float32, copy=False), scores

    def __call__(
        self, outputs: list[npt.NDArray[np.generic]], transform: Transform
    ) -> list[Detection]:
        if len(outputs) < 2:
            raise DecoderError(f"blazeface expects 2 outputs, got {len(outputs)}")
        # Regressors are the output with the wide last axis; logits have one column.
        first, second = outputs[0], outputs[1]
        regressors, logits = (first, second)
        if first.shape[-1] < second.shape[-1]:
            regressors, logits = second, first
        boxes, scores = self.decode_normalised(
            np.asarray(regressors, np.float32), np.asarray(logits, np.float32)
        )
        if scores.size == 0:
            return []
        blended = blend_overlaps(boxes.tolist(), scores.tolist(), self._iou, self._max)
        return [
            Detection(label=self._label, score=score, box=transform.box_to_frame(box))
            for box, score in blended
        ]


Box = tuple[float, float, float, float]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0.0 or height <= 0.0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0.0 else 0.0


def blend_overlaps(
    boxes: list[list[float]], scores: list[float], iou_threshold: float, max_keep: int
) -> list[tuple[Box, float]]:
    """MediaPipe's weighted NMS: each kept box is the score-weighted mean of its overlaps.

    BlazeFace fires on several neighbouring anchors per face; MediaPipe's graphs blend
    them (NonMaxSuppressionCalculator, WEIGHTED) rather than keep the best one, which
    is a few pixels off. The score stays the best one's. Plain lists: a frame has a
    handful of candidates, where numpy's per-call cost would outweigh the arithmetic.
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept: list[tuple[Box, float]] = []
    while order and len(kept) < max_keep:
        best = boxes[order[0]]
        group = [order[0]]
        rest: list[int] = []
        for index in order[1:]:
            (group if _iou(best, boxes[index]) > iou_threshold else rest).append(index)
        total = sum(scores[i] for i in group)
        mean = [sum(boxes[i][c] * scores[i] for i in group) / total for c in range(4)]
        kept.append(((mean[0], mean[1], mean[2], mean[3]), scores[order[0]]))
        order = rest
    return kept
