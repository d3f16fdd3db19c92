"""Image classification: top-k classes of a [1, C] output, each reported over the whole frame.

Whether the output is already a probability vector is decided once at load
(``output_kind``): a uint8 output quantised with scale 1/256 (int8: zero point -128)
is a softmax output by construction, because TFLite's quantised softmax always
emits that scale; re-applying softmax to it flattens every score to about 1/C.
Config ``output = "probabilities" | "logits"`` wins over the inference.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from agent.events.types import Detection
from agent.inference.base import TensorSpec
from agent.inference.decoders.common import FloatArray, to_detections
from agent.inference.preprocess import Transform

OutputKind = Literal["auto", "probabilities", "logits"]
PROBABILITY_SUM_TOLERANCE = 0.05
SOFTMAX_SCALE = 1.0 / 256.0
SOFTMAX_ZERO_POINTS: dict[np.dtype[np.generic], int] = {
    np.dtype(np.uint8): 0,
    np.dtype(np.int8): -128,
}


def output_kind(spec: TensorSpec | None, configured: OutputKind) -> OutputKind:
    """The configured kind, else "probabilities" for a quantised softmax output, else "auto"."""
    if configured != "auto" or spec is None:
        return configured
    zero_point = SOFTMAX_ZERO_POINTS.get(spec.dtype)
    if (
        zero_point is not None
        and spec.zero_point == zero_point
        and abs(spec.scale - SOFTMAX_SCALE) < SOFTMAX_SCALE * 1e-3
    ):
        return "probabilities"
    return "auto"


def softmax(raw: FloatArray) -> FloatArray:
    scores = raw.reshape(-1).astype(np.float64)
    shifted = np.exp(scores - scores.max())
    result: FloatArray = (shifted / shifted.sum()).astype(np.float32)
    return result


def probabilities(raw: FloatArray, kind: OutputKind = "auto") -> FloatArray:
    """Scores in 0..1: as they are for probabilities, softmax for logits.

    ``auto`` (a float output nothing else tells about) takes a non-negative vector
    summing to 1 as probabilities and anything else as logits.
    """
    scores = raw.reshape(-1).astype(np.float32)
    if kind == "probabilities":
        return np.clip(scores, 0.0, 1.0)
    if kind == "logits":
        return softmax(scores)
    total = float(scores.astype(np.float64).sum())
    if scores.min() >= 0 and abs(total - 1.0) <= PROBABILITY_SUM_TOLERANCE:
        return scores
    return softmax(scores)


class ClassifyDecoder:
    def __init__(
        self,
        labels: dict[int, str],
        score_threshold: float,
        top_k: int,
        kind: OutputKind = "auto",
    ) -> None:
        self._labels = labels
        self._threshold = score_threshold
        self._top_k = top_k
        self.kind = kind

    def __call__(
        self, outputs: list[npt.NDArray[np.generic]], transform: Transform
    ) -> list[Detection]:
        probs = probabilities(np.asarray(outputs[0], np.float32), self.kind)
        top = np.argsort(-probs, kind="stable")[: self._top_k]
        top = top[probs[top] >= self._threshold]
        whole = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]]), (len(top), 1))
        return to_detections(transform.boxes_to_frame(whole), probs[top], top, self._labels)
