"""Which input adaptation a model gets: resize mode and normalisation, and where each came from.

Pure: config, input spec and the hints read from the model file in, an ``InputPlan``
out. Precedence per setting: the config when it sets it, then the model file
(TFLite metadata, ONNX ``metadata_props``, input quantisation), then the default
for the decoder family. ``InputPlan.sources`` says which, for the load log and
``model inspect``.

Detection decoders default to letterbox: detectors are trained on undistorted
images (MediaPipe and YOLO pre-processing both keep the aspect and pad), so a
squashed 16:9 frame makes every object narrower than anything seen in training,
and boxes come back with the frame's aspect instead of the object's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.config.model import ModelConfig
from agent.inference.base import InputSpec
from agent.inference.preprocess import ColorOrder, ResizeMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# value = pixel * scale + offset for pixels 0..255
RANGE_AFFINES: dict[str, tuple[float, float]] = {
    "0_255": (1.0, 0.0),
    "0_1": (1.0 / 255.0, 0.0),
    "-1_1": (2.0 / 255.0, -1.0),
}
DEFAULT_FLOAT_RANGE = "-1_1"  # MediaPipe and the TF detection zoo's float models
# YOLO exports (Ultralytics, YOLOv5) all take 0..1 RGB.
FAMILY_FLOAT_RANGES = {"yolo": "0_1"}


@dataclass(frozen=True, slots=True)
class Affine:
    """Per-channel ``value = pixel * scale + offset`` on 0..255 pixels (model colour order)."""

    scale: tuple[float, float, float]
    offset: tuple[float, float, float]

    @classmethod
    def uniform(cls, scale: float, offset: float) -> Affine:
        return cls((scale, scale, scale), (offset, offset, offset))

    @classmethod
    def from_mean_std(
        cls,
        mean: list[float] | tuple[float, ...],
        std: list[float] | tuple[float, ...],
        unit: float,
    ) -> Affine:
        """``value = (pixel * unit - mean) / std``; unit 1/255 for 0..1 figures, 1 for pixels."""
        m = _three(mean)
        s = _three(std)
        return cls(
            (unit / s[0], unit / s[1], unit / s[2]),
            (-m[0] / s[0], -m[1] / s[1], -m[2] / s[2]),
        )

    def value_range(self) -> tuple[float, float]:
        """Lowest and highest value any channel can take (pixels 0..255)."""
        ends = [o + s * p for s, o in zip(self.scale, self.offset, strict=True) for p in (0, 255)]
        return min(ends), max(ends)


def _three(values: list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    if len(values) == 1:
        return (values[0], values[0], values[0])
    return (values[0], values[1], values[2])


@dataclass(frozen=True, slots=True)
class ModelHints:
    """What the model file itself says about its input and outputs."""

    mean: tuple[float, ...] = ()  # pixel units (0..255), TFLite NormalizationOptions
    std: tuple[float, ...] = ()
    labels: dict[int, str] = field(default_factory=dict)
    labels_source: str = ""
    input_size: tuple[int, int] | None = None  # (width, height), e.g. ultralytics imgsz
    metadata: dict[str, str] = field(default_factory=dict)  # raw key/values found


@dataclass(frozen=True, slots=True)
class InputPlan:
    resize_mode: ResizeMode
    color_order: ColorOrder
    crop_fraction: float
    affine: Affine | None  # None: integer input fed raw pixels (uint8) or pixel - 128 (int8)
    sources: dict[str, str]


def default_resize_mode(decoder: str) -> ResizeMode:
    return "squash" if decoder == "classify" else "letterbox"


def _integer(spec: InputSpec) -> bool:
    return bool(np.issubdtype(spec.tensor.dtype, np.integer))


def _normalisation(
    model: ModelConfig, spec: InputSpec, hints: ModelHints
) -> tuple[Affine | None, str]:
    if model.mean:
        return Affine.from_mean_std(model.mean, model.std, 1.0 / 255.0), "config mean/std"
    if model.input_range == "imagenet":
        return Affine.from_mean_std(IMAGENET_MEAN, IMAGENET_STD, 1.0 / 255.0), "config imagenet"
    if model.input_range != "auto":
        return Affine.uniform(*RANGE_AFFINES[model.input_range]), "config input_range"
    if hints.mean and hints.std:
        return Affine.from_mean_std(hints.mean, hints.std, 1.0), "model metadata"
    if _integer(spec):
        return None, _integer_source(spec)
    name = FAMILY_FLOAT_RANGES.get(model.decoder, DEFAULT_FLOAT_RANGE)
    return Affine.uniform(*RANGE_AFFINES[name]), f"default for {model.decoder} ({name})"


def _integer_source(spec: InputSpec) -> str:
    """Integer inputs take raw pixels; the quantisation says what range the model reads."""
    tensor = spec.tensor
    if not tensor.scale:
        return "integer input (raw pixels)"
    lo = tensor.scale * (0 - tensor.zero_point)
    hi = tensor.scale * (255 - tensor.zero_point)
    return f"input quantisation (raw pixels, the model reads {lo:.3g}..{hi:.3g})"


def plan_input(model: ModelConfig, spec: InputSpec, hints: ModelHints | None = None) -> InputPlan:
    hints = hints or ModelHints()
    if model.resize_mode is not None:
        mode: ResizeMode = model.resize_mode
        mode_source = "config"
    else:
        mode = default_resize_mode(model.decoder)
        mode_source = f"default for {model.decoder}"
    affine, norm_source = _normalisation(model, spec, hints)
    return InputPlan(
        resize_mode=mode,
        color_order=model.color_order,
        crop_fraction=model.crop_fraction,
        affine=affine,
        sources={"resize_mode": mode_source, "normalisation": norm_source},
    )
