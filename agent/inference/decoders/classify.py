"""Image classification: top-k classes of a [1, C] output, each reported over the whole frame."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.events.types import Detection
from agent.inference.decoders.common import FloatArray, to_detections
from agent.inference.preprocess import Transform

PROBABILITY_SUM_TOLERANCE = 0.05


def probabilities(raw: FloatArray) -> FloatArray:
    """Softmax, unless the output already is a probability vector."""
    scores = raw.reshape(-1).astype(np.float64)
    total = float(scores.sum())
    if scores.min() >= 0 and abs(total - 1.0) <= PROBABILITY_SUM_TOLERANCE:
        return scores.astype(np.float32)
    shifted = np.exp(scores - scores.max())
    result: FloatArray = (shifted / shifted.sum()).astype(np.float32)
    return result


class ClassifyDecoder:
    def __init__(self, labels: dict[int, str], score_threshold: float, top_k: int) -> None:
        self._labels = labels
        self._threshold = score_threshold
        self._top_k = top_k

    def __call__(
        self, outputs: list[npt.NDArray[np.generic]], transform: Transform
    ) -> list[Detection]:
        probs = probabilities(np.asarray(outputs[0], np.float32))
        top = np.argsort(-probs, kind="stable")[: self._top_k]
        top = top[probs[top] >= self._threshold]
        whole = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]]), (len(top), 1))
        return to_detections(transform.boxes_to_frame(whole), probs[top], top, self._labels)
