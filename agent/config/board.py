"""Board profile section: the hardware facts that differ between device classes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.config.base import StrictModel

BackendName = Literal["tflite", "tensorrt", "onnx"]


class BoardConfig(StrictModel):
    name: str = Field(default="x86-gateway", description="Profile name this section came from.")
    arch: Literal["x86_64", "aarch64", "armv7l"] = Field(
        default="x86_64", description="CPU architecture, matched against manifest compatibility."
    )
    accelerator: Literal["none", "jetson-gpu", "edgetpu", "nvidia-gpu"] = Field(
        default="none",
        description="Inference accelerator the board is expected to have (nvidia-gpu: discrete).",
    )
    default_backend: BackendName = Field(
        default="tflite", description="Backend used by models that do not name one."
    )
    inference_threads: int = Field(
        default=2, ge=1, le=64, description="CPU threads per interpreter when a model sets none."
    )
    csi_pipeline: str = Field(
        default="",
        description=(
            "GStreamer template for csi:N; {sensor_id} {width} {height} {fps} are filled in."
        ),
    )
    csi_width: int = Field(default=1280, ge=16, description="Default CSI capture width in pixels.")
    csi_height: int = Field(default=720, ge=16, description="Default CSI capture height in pixels.")
    thermal_zone_paths: list[str] = Field(
        default_factory=lambda: ["/sys/class/thermal/thermal_zone0/temp"],
        description="sysfs files with temperatures in millidegrees Celsius.",
    )
    thermal_warn_c: float = Field(
        default=80.0, description="Temperature in Celsius above which health degrades."
    )
    throttle_path: str = Field(
        default="",
        description="sysfs file with a throttling bit mask; empty when the board has none.",
    )
    memory_budget_mb: int = Field(
        default=512, ge=32, description="Resident memory the agent should stay under, in MB."
    )
    gpu_device_paths: list[str] = Field(
        default_factory=list, description="Device nodes the accelerator needs (systemd allow-list)."
    )
    edgetpu_library: str = Field(
        default="libedgetpu.so.1", description="EdgeTPU delegate shared library name."
    )
    shadow_busy_share: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description=(
            "Share of wall time a shadow trial may keep its thread busy (two inferences per"
            " compared frame, one interpreter thread each); halved while the serving fps is"
            " more than 10 % down."
        ),
    )
