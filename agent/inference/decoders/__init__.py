"""Decoders: raw outputs of any backend → detections in frame pixels.

``make_decoder`` builds one from the model's config and the loaded backend's
tensor specs; outputs are dequantised first, so decoders only see float arrays.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.config.model import ModelConfig
from agent.errors import DecoderError
from agent.events.types import Detection
from agent.inference.base import InputSpec, TensorSpec
from agent.inference.decoders.blazeface import BlazeFaceDecoder
from agent.inference.decoders.classify import ClassifyDecoder, output_kind
from agent.inference.decoders.common import Decoder, dequantize, load_labels
from agent.inference.decoders.fit import check_fit
from agent.inference.decoders.ssd_postprocess import SsdPostprocessDecoder, assign_outputs
from agent.inference.decoders.yolo import YoloDecoder
from agent.inference.preprocess import Transform

__all__ = ["Decoder", "DequantizingDecoder", "make_decoder"]


class DequantizingDecoder:
    """Dequantises integer outputs with their specs, then runs the inner decoder."""

    def __init__(self, inner: Decoder, specs: list[TensorSpec]) -> None:
        self._inner = inner
        self._specs = specs
        self._quantised = any(s.scale for s in specs)

    def __call__(
        self, outputs: list[npt.NDArray[np.generic]], transform: Transform
    ) -> list[Detection]:
        if self._quantised:
            outputs = [
                dequantize(o, self._specs[i] if i < len(self._specs) else None)
                for i, o in enumerate(outputs)
            ]
        try:
            return self._inner(outputs, transform)
        except (ValueError, IndexError, TypeError) as exc:
            # Numpy's complaint about outputs of the wrong shape: the model does not fit,
            # which health and the load check report as such, not as a crash per frame.
            shapes = [list(o.shape) for o in outputs]
            raise DecoderError(f"decoder failed on outputs {shapes}: {exc}") from exc


def decoder_threshold(model: ModelConfig) -> float:
    """The lowest score any label may pass with; per-label filtering happens after decoding."""
    return min([model.threshold, *model.label_thresholds.values()])


def make_decoder(
    model: ModelConfig,
    input_spec: InputSpec,
    output_specs: list[TensorSpec],
    file_labels: dict[int, str] | None = None,
) -> Decoder:
    """The configured decoder, after checking the model's outputs fit it.

    Raises ``DecoderMismatchError`` (a ``ModelLoadError``, reason ``decoder_mismatch``)
    when they do not. ``file_labels`` (labels found in the model file) are used when
    the config names no labels file.
    """
    check_fit(model.decoder, input_spec, output_specs, model=model.path)
    labels = load_labels(model.labels_path) if model.labels_path else dict(file_labels or {})
    threshold = decoder_threshold(model)
    inner: Decoder
    if model.decoder == "blazeface":
        inner = BlazeFaceDecoder(
            input_spec.width,
            threshold,
            model.nms_iou,
            model.max_detections,
            label=labels.get(0, "face"),
        )
    elif model.decoder == "ssd_postprocess":
        inner = SsdPostprocessDecoder(
            assign_outputs(output_specs), labels, threshold, model.max_detections
        )
    elif model.decoder == "yolo":
        inner = YoloDecoder(
            input_w=input_spec.width,
            input_h=input_spec.height,
            labels=labels,
            score_threshold=threshold,
            iou_threshold=model.nms_iou,
            max_detections=model.max_detections,
            agnostic=model.agnostic_nms,
        )
    else:
        kind = output_kind(output_specs[0] if output_specs else None, model.output)
        inner = ClassifyDecoder(labels, threshold, model.top_k, kind)
    return DequantizingDecoder(inner, output_specs)
