"""The standard TFLite detection head (TFLite_Detection_PostProcess): boxes, classes, scores, count.

Boxes are normalised ymin, xmin, ymax, xmax of the model input. Outputs are found by
name when the model names them, otherwise by shape and the classic order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.errors import DecoderError
from agent.events.types import Detection
from agent.inference.base import TensorSpec
from agent.inference.decoders.common import FloatArray, to_detections
from agent.inference.preprocess import Transform


def assign_outputs(specs: list[TensorSpec]) -> tuple[int, int, int, int]:
    """Indices of (boxes, classes, scores, count) among the model's outputs."""
    if len(specs) != 4:
        raise DecoderError(f"ssd_postprocess expects 4 outputs, model has {len(specs)}")
    boxes = [i for i, s in enumerate(specs) if len(s.shape) >= 2 and s.shape[-1] == 4]
    count = [i for i, s in enumerate(specs) if int(np.prod(s.shape)) == 1]
    if len(boxes) != 1 or len(count) != 1:
        raise DecoderError(f"ssd_postprocess cannot find boxes/count in {[s.shape for s in specs]}")
    rest = [i for i in range(4) if i not in (boxes[0], count[0])]
    by_name = {
        ("class" in specs[i].name.lower(), "score" in specs[i].name.lower()): i for i in rest
    }
    classes, scores = by_name.get((True, False)), by_name.get((False, True))
    if classes is None or scores is None:
        classes, scores = rest  # TF1 order: boxes, classes, scores, count
    return boxes[0], classes, scores, count[0]


class SsdPostprocessDecoder:
    def __init__(
        self,
        order: tuple[int, int, int, int],
        labels: dict[int, str],
        score_threshold: float,
        max_detections: int,
    ) -> None:
        self._order = order
        self._labels = labels
        self._threshold = score_threshold
        self._max = max_detections

    def __call__(
        self, outputs: list[npt.NDArray[np.generic]], transform: Transform
    ) -> list[Detection]:
        b, c, s, n = (np.asarray(outputs[i], np.float32) for i in self._order)
        boxes: FloatArray = b.reshape(-1, 4)
        classes = c.reshape(-1)
        scores = s.reshape(-1)
        count = min(int(n.reshape(-1)[0]), len(scores), len(boxes))
        keep = np.flatnonzero(scores[:count] >= self._threshold)[: self._max]
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        xyxy = boxes[keep][:, [1, 0, 3, 2]]
        return to_detections(
            transform.boxes_to_frame(xyxy),
            scores[keep],
            classes[keep].astype(np.int64),
            self._labels,
        )
