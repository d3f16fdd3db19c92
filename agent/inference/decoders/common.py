"""What every decoder shares: the Decoder protocol, dequantisation and labels files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.errors import DecoderError
from agent.events.types import Detection
from agent.inference.base import TensorSpec
from agent.inference.preprocess import Transform

FloatArray = npt.NDArray[np.float32]
_NUMBERED = re.compile(r"^(\d+)\s+(.+)$")


class Decoder(Protocol):
    def __call__(
        self, outputs: list[npt.NDArray[np.generic]], transform: Transform
    ) -> list[Detection]:
        """Raw outputs of one invoke → detections in frame pixels, best first."""
        ...


def dequantize(array: npt.NDArray[np.generic], spec: TensorSpec | None) -> FloatArray:
    if spec is not None and spec.scale and np.issubdtype(array.dtype, np.integer):
        return ((array.astype(np.float32) - spec.zero_point) * spec.scale).astype(np.float32)
    return np.asarray(array, np.float32)


def load_labels(path: str | Path) -> dict[int, str]:
    """One label per line (line number = class id), or ``<id> <label>`` lines."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise DecoderError(f"cannot read labels file {path}: {exc.strerror}") from exc
    numbered = [m for m in (_NUMBERED.match(ln) for ln in lines if ln) if m]
    if numbered and len(numbered) == sum(1 for ln in lines if ln):
        return {int(m.group(1)): m.group(2).strip() for m in numbered}
    return {i: ln for i, ln in enumerate(lines) if ln}


def label_of(labels: dict[int, str], class_id: int) -> str:
    return labels.get(class_id, str(class_id))


def sigmoid(x: FloatArray) -> FloatArray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))).astype(np.float32)


def to_detections(
    boxes_frame: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
    class_ids: npt.NDArray[np.integer],
    labels: dict[int, str],
) -> list[Detection]:
    return [
        Detection(
            label=label_of(labels, int(c)),
            score=float(s),
            box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
        )
        for b, s, c in zip(boxes_frame, scores, class_ids, strict=True)
    ]
