"""A candidate model loaded as its slot runs it, for golden cases and the shadow trial.

Same loading as the pipeline (``agent.pipeline.model.load_model``: the slot's decoder,
input adaptation and decoder-fit checks), same thresholds and class-wise NMS as the
worker's post-processing, no debounce (one frame at a time). A model whose outputs do
not fit the decoder raises ``DecoderMismatchError`` here, before anything serves it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.errors import ModelLoadError, Reason, UpdateError
from agent.events.filters import apply_thresholds, suppress_overlaps
from agent.events.types import Detection
from agent.pipeline.model import LoadedModel, backend_options, load_model, resolve_backend

MAX_GOLDEN_PIXELS = 4096 * 4096


class Detector(Protocol):
    @property
    def top_label(self) -> bool:
        """A classifier: compare top labels, not boxes."""
        ...

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]: ...

    def close(self) -> None: ...


class DetectorFactory(Protocol):
    def open(self, slot: str, path: Path, threads: int | None = None) -> Detector:
        """Load ``path`` as ``slot`` runs it; ModelLoadError (DecoderMismatchError) on failure."""
        ...


class SlotDetector:
    def __init__(self, model: ModelConfig, loaded: LoadedModel) -> None:
        self._model = model
        self._loaded = loaded
        self._tensor = np.empty_like(loaded.backend.input_buffer())

    @property
    def top_label(self) -> bool:
        return self._model.decoder == "classify"

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        loaded, model = self._loaded, self._model
        transform = loaded.preprocessor.prepare(image, self._tensor)
        outputs = loaded.backend.infer(self._tensor)
        detections = apply_thresholds(
            loaded.decoder(outputs, transform), model.threshold, model.label_thresholds
        )
        if model.decoder == "ssd_postprocess" and len(detections) > 1:
            detections = suppress_overlaps(detections, model.nms_iou, model.max_detections)
        return detections

    def close(self) -> None:
        self._loaded.close()


class SlotDetectors:
    """``DetectorFactory`` over the agent config: each slot's ``[[models]]`` settings."""

    def __init__(self, config: AgentConfig) -> None:
        self._config = config

    def open(self, slot: str, path: Path, threads: int | None = None) -> Detector:
        model = next((m for m in self._config.models if m.slot == slot), None)
        if model is None:
            raise ModelLoadError(
                f"no model slot {slot!r} in the config", model=str(path), unknown_slot=True
            )
        options = backend_options(self._config, model, path)
        if threads is not None:
            options = dataclasses.replace(options, threads=threads)
        backend = resolve_backend(self._config, model, path)
        return SlotDetector(model, load_model(model, backend, path, options))


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """A golden image as BGR (what cameras deliver); UpdateError when it does not decode."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise UpdateError(Reason.GOLDEN_MISMATCH, f"{path.name} is not a readable image")
    if image.shape[0] * image.shape[1] > MAX_GOLDEN_PIXELS:
        raise UpdateError(Reason.GOLDEN_MISMATCH, f"{path.name} is over {MAX_GOLDEN_PIXELS} px")
    return np.ascontiguousarray(image, dtype=np.uint8)
