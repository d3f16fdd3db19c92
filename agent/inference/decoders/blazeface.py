"""BlazeFace (MediaPipe face detection): SSD anchors, box regressors and score logits.

Anchors follow MediaPipe's SsdAnchorsCalculator with ``fixed_anchor_size``: every
anchor is 1x1 (normalised) at its cell centre, so only the feature-map layout
matters. Layouts of the three published models, told apart by input size and anchor
count: short-range 128 px (strides 8/16, 896 anchors), full-range 192 px (stride 4,
2304 anchors) and back-camera 256 px (strides 16/32, 896 anchors).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import cast

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


Candidate = tuple[list[float], float]  # normalised x1, y1, x2, y2 of the input; score


class BlazeFaceDecoder:
    """Raw outputs → face boxes in frame pixels, with few numpy calls per frame.

    Decoding runs once per inferred frame, so its fixed cost counts: a frame without a
    face (most) costs one ``max`` over the logits, with the outputs' layout checked once
    per shape; a face frame gathers its few candidate anchors with a handful of calls
    and decodes and blends them in plain Python (numpy's per-call cost would outweigh
    the arithmetic on a handful of rows).
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
        # (shape of outputs[0], shape of outputs[1]) → whether outputs[0] holds the regressors.
        self._layouts: dict[tuple[tuple[int, ...], tuple[int, ...]], bool] = {}
        self._anchor_lists: dict[int, list[list[float]]] = {}

    def _split(self, first: FloatArray, second: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(regressors, logits): the output with the wide last axis holds the regressors."""
        key = (first.shape, second.shape)
        regressors_first = self._layouts.get(key)
        if regressors_first is None:
            regressors_first = first.shape[-1] >= second.shape[-1]
            regressors, logits = (first, second) if regressors_first else (second, first)
            anchors = int(np.prod(logits.shape))
            if regressors.size != anchors * regressors.shape[-1] or regressors.shape[-1] < 4:
                raise DecoderError(
                    f"blazeface expects [1,N,>=4] and [1,N,1] outputs, got {regressors.shape} "
                    f"and {logits.shape}"
                )
            if anchors:
                layout_for(self._size, anchors)  # an anchor count no layout has is refused here
            self._layouts[key] = regressors_first
        return (first, second) if regressors_first else (second, first)

    def candidates(self, regressors: FloatArray, logits: FloatArray) -> list[Candidate]:
        """Anchors whose score passes the threshold: box (normalised x1, y1, x2, y2 of the
        model input) and score, in anchor order."""
        if logits.size == 0 or float(logits.max()) < self._logit_threshold:
            return []
        flat = logits.reshape(-1)
        keep = np.flatnonzero(flat >= self._logit_threshold)
        rows = regressors.reshape(flat.shape[0], -1)[keep, :4].tolist()
        anchors = self._anchor_lists.get(flat.shape[0])
        if anchors is None:
            anchors = anchors_for(self._size, flat.shape[0]).tolist()
            self._anchor_lists[flat.shape[0]] = anchors
        k = 1.0 / self._size
        out: list[Candidate] = []
        for index, (cx, cy, w, h), logit in zip(
            keep.tolist(), rows, flat[keep].tolist(), strict=True
        ):
            # cx, cy, w, h in input pixels, centre relative to the anchor's (MediaPipe's
            # fixed-size anchors); every kept logit is above the threshold's: exp is finite.
            ax, ay = anchors[index]
            x, y, half_w, half_h = cx * k + ax, cy * k + ay, w * k / 2, h * k / 2
            score = 1.0 / (1.0 + math.exp(-logit))
            out.append(([x - half_w, y - half_h, x + half_w, y + half_h], score))
        return out

    def decode_normalised(
        self, regressors: FloatArray, logits: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Boxes (normalised x1, y1, x2, y2 of the model input) and scores above the threshold."""
        regressors, logits = self._split(regressors, logits)
        found = self.candidates(regressors, logits)
        boxes = np.array([box for box, _ in found], np.float32).reshape(-1, 4)
        return boxes, np.array([score for _, score in found], np.float32)

    def __call__(
        self, outputs: list[npt.NDArray[np.generic]], transform: Transform
    ) -> list[Detection]:
        if len(outputs) < 2:
            raise DecoderError(f"blazeface expects 2 outputs, got {len(outputs)}")
        first, second = outputs[0], outputs[1]
        if first.dtype != np.float32 or second.dtype != np.float32:
            first, second = np.asarray(first, np.float32), np.asarray(second, np.float32)
        found = self.candidates(*self._split(cast("FloatArray", first), cast("FloatArray", second)))
        if not found:
            return []
        boxes = [box for box, _ in found]
        blended = blend_overlaps(boxes, [score for _, score in found], self._iou, self._max)
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
