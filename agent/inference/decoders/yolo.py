"""YOLO-style heads (v5/v8 exports): one tensor of boxes and class scores, then NMS.

Accepts [1, N, 4+C] and [1, 4+C, N] (the predictions axis is the longer one), and
[.., 5+C] with an objectness column when the labels say there are C classes. Boxes
are centre x, centre y, width, height in input pixels, or normalised (TFLite exports).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.errors import DecoderError
from agent.events.nms import nms
from agent.events.types import Detection
from agent.inference.decoders.common import FloatArray, to_detections
from agent.inference.preprocess import Transform

NORMALISED_MAX = 2.0  # coordinates all below this are taken as normalised


def predictions(head: FloatArray) -> FloatArray:
    """[N, 4+C] (or [N, 5+C]) from a [1, N, K] or [1, K, N] head."""
    array = head.reshape(head.shape[-2:]) if head.ndim == 3 else head
    if array.ndim != 2:
        raise DecoderError(f"yolo expects a [1, N, 4+C] or [1, 4+C, N] output, got {head.shape}")
    rows, cols = array.shape
    return array.T if rows < cols else array


class YoloDecoder:
    def __init__(
        self,
        *,
        input_w: int,
        input_h: int,
        labels: dict[int, str],
        score_threshold: float,
        iou_threshold: float,
        max_detections: int,
        agnostic: bool = False,
    ) -> None:
        self._w, self._h = input_w, input_h
        self._agnostic = agnostic
        self._labels = labels
        self._threshold = score_threshold
        self._iou = iou_threshold
        self._max = max_detections

    def __call__(
        self, outputs: list[npt.NDArray[np.generic]], transform: Transform
    ) -> list[Detection]:
        preds = predictions(np.asarray(outputs[0], np.float32))
        if preds.shape[1] < 5:
            raise DecoderError(f"yolo head has {preds.shape[1]} columns; needs 4 box + classes")
        n_classes = preds.shape[1] - 4
        if self._labels and preds.shape[1] == 5 + len(self._labels):
            class_scores = preds[:, 5:] * preds[:, 4:5]  # v5: objectness x class probability
        else:
            class_scores = preds[:, 4 : 4 + n_classes]
        class_ids = np.argmax(class_scores, axis=1)
        scores = class_scores[np.arange(len(preds)), class_ids]
        keep = np.flatnonzero(scores >= self._threshold)
        if keep.size == 0:
            return []
        cxcywh = preds[keep, :4]
        if float(np.max(np.abs(cxcywh))) > NORMALISED_MAX:
            cxcywh = (cxcywh / np.array([self._w, self._h, self._w, self._h])).astype(np.float32)
        half = cxcywh[:, 2:4] / 2
        boxes = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)
        classes = None if self._agnostic else class_ids[keep]
        kept = nms(boxes, scores[keep], self._iou, self._max, classes=classes)
        return to_detections(
            transform.boxes_to_frame(boxes[kept]),
            scores[keep][kept],
            class_ids[keep][kept],
            self._labels,
        )
