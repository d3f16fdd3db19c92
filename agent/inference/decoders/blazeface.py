"""BlazeFace (MediaPipe face detection): SSD anchors, box regressors and score logits.

Anchors follow MediaPipe's SsdAnchorsCalculator with ``fixed_anchor_size``: every
anchor is 1x1 (normalised) at its cell centre, so only the feature-map layout
matters. Layouts of the three published models, told apart by input size and anchor
count: short-range 128 px (strides 8/16, 896 anchors), full-range 192 px (stride 4,
2304 anchors) and back-camera 256 px (strides 16/32, 896 anchors).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from agent.errors import DecoderError
from agent.events.nms import iou_one_to_many
from agent.events.types import Detection
from agent.inference.decoders.common import FloatArray, sigmoid, to_detections
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


class BlazeFaceDecoder:
    def __init__(
        self,
        input_size: int,
        score_threshold: float,
        iou_threshold: float,
        max_detections: int,
        label: str = "face",
    ) -> None:
        self._size = input_size
        self._threshold = score_threshold
        clipped = min(max(score_threshold, 1e-6), 1 - 1e-6)
        self._logit_threshold = float(np.log(clipped / (1 - clipped)))
        self._iou = iou_threshold
        self._max = max_detections
        self._labels = {0: label}

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
        anchors = anchors_for(self._size, raw.shape[0])
        # Compare in logit space: only the few anchors that pass get a sigmoid.
        keep = np.flatnonzero(flat_logits >= self._logit_threshold)
        if keep.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        scores = sigmoid(flat_logits[keep])
        r = raw[keep, :4] / np.float32(self._size)
        cx = r[:, 0] + anchors[keep, 0]
        cy = r[:, 1] + anchors[keep, 1]
        half_w, half_h = r[:, 2] / 2, r[:, 3] / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        return boxes.astype(np.float32), scores

    def __call__(
        self, outputs: list[npt.NDArray[np.generic]], transform: Transform
    ) -> list[Detection]:
        if len(outputs) < 2:
            raise DecoderError(f"blazeface expects 2 outputs, got {len(outputs)}")
        # Regressors are the output with the wide last axis; logits have one column.
        regressors, logits = sorted(outputs[:2], key=lambda a: -a.shape[-1])
        boxes, scores = self.decode_normalised(
            np.asarray(regressors, np.float32), np.asarray(logits, np.float32)
        )
        blended, best = blend_overlaps(boxes, scores, self._iou, self._max)
        frame_boxes = transform.boxes_to_frame(blended)
        return to_detections(frame_boxes, best, np.zeros(len(best), np.int64), self._labels)


def blend_overlaps(
    boxes: FloatArray, scores: FloatArray, iou_threshold: float, max_keep: int
) -> tuple[FloatArray, FloatArray]:
    """MediaPipe's weighted NMS: each kept box is the score-weighted mean of its overlaps.

    BlazeFace fires on several neighbouring anchors per face; MediaPipe's graphs blend
    them (NonMaxSuppressionCalculator, WEIGHTED) rather than keep the best one, which
    is a few pixels off. The score stays the best one's.
    """
    order = np.argsort(-scores, kind="stable")
    kept_boxes: list[FloatArray] = []
    kept_scores: list[float] = []
    while order.size and len(kept_boxes) < max_keep:
        best, rest = int(order[0]), order[1:]
        overlap = iou_one_to_many(boxes[best], boxes[rest]) if rest.size else np.zeros(0)
        group = np.concatenate([[best], rest[overlap > iou_threshold]])
        weights = scores[group].astype(np.float64)
        kept_boxes.append((boxes[group] * weights[:, None]).sum(axis=0) / weights.sum())
        kept_scores.append(float(scores[best]))
        order = rest[overlap <= iou_threshold]
    if not kept_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return np.array(kept_boxes, np.float32), np.array(kept_scores, np.float32)
