"""Model section: one entry per model slot."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import StrictModel
from agent.config.board import BackendName

SLOT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
DEFAULT_MODEL_PATH = "/usr/share/edge-agent/models/face_detection_short_range.tflite"


class ModelConfig(StrictModel):
    slot: str = Field(default="detector", description="Update slot name; one model per slot.")
    path: str = Field(
        default=DEFAULT_MODEL_PATH,
        description="Model file used until the slot has an installed update.",
    )
    backend: BackendName | None = Field(
        default=None, description="tflite, tensorrt or onnx; empty takes the board default."
    )
    decoder: Literal["blazeface", "ssd_postprocess", "yolo", "classify"] = Field(
        default="blazeface", description="How raw model outputs become detections."
    )
    labels_path: str = Field(default="", description="Labels file, one label per line.")
    cameras: list[str] = Field(
        default_factory=list, description="Cameras this model runs on; empty means all."
    )
    threshold: float = Field(default=0.6, ge=0, le=1, description="Default minimum score.")
    label_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per-label minimum scores overriding threshold."
    )
    threads: int | None = Field(
        default=None, ge=1, le=64, description="Interpreter threads; empty takes the board default."
    )
    resize_mode: Literal["squash", "letterbox", "crop"] | None = Field(
        default=None,
        description=(
            "How frames are fitted to the model input; empty: letterbox (aspect kept, "
            "padded) for detection decoders, squash for classify."
        ),
    )
    crop_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description=(
            "resize_mode crop: central part of the frame's short side kept (0.875 is the "
            "resize-256, centre-crop-224 of ImageNet classifiers)."
        ),
    )
    color_order: Literal["rgb", "bgr"] = Field(
        default="rgb", description="Channel order the model expects."
    )
    input_range: Literal["auto", "0_255", "0_1", "-1_1", "imagenet"] = Field(
        default="auto",
        description=(
            "Float input normalisation; imagenet is 0..1 then ImageNet mean/std per channel; "
            "auto takes the model file's normalisation, else -1..1 for float models, raw "
            "for integer ones."
        ),
    )
    mean: list[float] = Field(
        default_factory=list,
        description=(
            "Per-channel mean in 0..1 pixel units, in the model's colour order "
            "(value = (pixel/255 - mean) / std); overrides input_range."
        ),
    )
    std: list[float] = Field(
        default_factory=list,
        description="Per-channel standard deviation in 0..1 pixel units; goes with mean.",
    )
    output: Literal["auto", "probabilities", "logits"] = Field(
        default="auto",
        description=(
            "classify: whether the output is probabilities or logits (softmax applied); "
            "auto: a uint8 output with scale 1/256 is probabilities, else judged per frame."
        ),
    )
    nms_iou: float = Field(default=0.3, gt=0, le=1, description="IoU above which boxes merge.")
    agnostic_nms: bool = Field(
        default=False,
        description=(
            "yolo: one NMS across classes (overlapping boxes of different classes suppress "
            "each other), as Ultralytics' agnostic_nms; false keeps one box per class."
        ),
    )
    max_detections: int = Field(default=50, ge=1, le=1000, description="Detections kept per frame.")
    top_k: int = Field(
        default=5, ge=1, le=100, description="Classes reported by the classify decoder."
    )
    debounce_frames: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Consecutive frames a label must appear before an event.",
    )
    motion_gate: bool = Field(default=False, description="Skip inference while the scene is still.")
    motion_threshold: float = Field(
        default=0.01, gt=0, le=1, description="Fraction of changed pixels that counts as motion."
    )
    input_size: list[int] = Field(
        default_factory=list,
        description=(
            "[width, height] in pixels for models with a dynamic input size; "
            "empty takes the model's own (or the backend default when it has none)."
        ),
    )
    onnx_providers: list[str] = Field(
        default_factory=list,
        description=(
            "ONNX Runtime execution providers in order of preference "
            "(tensorrt, cuda, openvino, auto, or full names); empty means CPU, "
            "or auto on boards whose accelerator is a GPU."
        ),
    )
    overlap_stages: bool = Field(
        default=True,
        description=(
            "Preprocess and post-process in their own threads, overlapping the invoke; "
            "false runs every stage in the inference thread (machines without a spare core)."
        ),
    )
    inference_timeout_s: float = Field(
        default=10.0, gt=0, description="An invoke older than this marks the model stuck."
    )

    @field_validator("input_size")
    @classmethod
    def _size_pair(cls, value: list[int]) -> list[int]:
        if value and (len(value) != 2 or min(value) < 1):
            raise ValueError("must be empty or [width, height] in pixels, both >= 1")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, value: list[float]) -> list[float]:
        if value and len(value) not in (1, 3):
            raise ValueError("must be empty, one value or three (one per channel)")
        return value

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError("every std value must be > 0")
        return value

    @model_validator(mode="after")
    def _mean_with_std(self) -> ModelConfig:
        if bool(self.mean) != bool(self.std):
            raise ValueError("mean and std go together: set both or neither")
        return self

    @field_validator("slot")
    @classmethod
    def _slot_safe(cls, value: str) -> str:
        if not SLOT_RE.match(value):
            raise ValueError("must be 1-32 of a-z 0-9 _ - and start with a letter or digit")
        return value
