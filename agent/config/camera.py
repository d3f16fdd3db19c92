"""Camera section: one entry per source."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from agent.config.base import StrictModel

SOURCE_SCHEMES = ("file:", "images:", "v4l2:", "rtsp://", "rtsps://", "gst:", "csi:")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class CameraConfig(StrictModel):
    name: str = Field(default="cam0", description="Camera name used in topics and stats.")
    source: str = Field(
        default="v4l2:/dev/video0",
        description="file:PATH, images:DIR, v4l2:/dev/videoN, rtsp://..., gst:PIPELINE or csi:N.",
    )
    fps: float = Field(default=15.0, gt=0, le=240, description="Target capture rate in frames/s.")
    loop: bool = Field(default=False, description="Repeat file: and images: sources at the end.")
    width: int = Field(
        default=0, ge=0, description="Requested capture width in pixels; 0 = source default."
    )
    height: int = Field(
        default=0, ge=0, description="Requested capture height in pixels; 0 = source default."
    )
    stall_timeout_s: float = Field(
        default=20.0, gt=0, description="No frame for this long means stalled: release and reopen."
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest wait for a network source to open."
    )
    reconnect_max_s: float = Field(
        default=60.0, gt=0, description="Cap of the jittered backoff between reopen attempts."
    )
    ring_slots: int = Field(
        default=3,
        ge=2,
        le=16,
        description="Preallocated frame slots between capture and inference.",
    )

    @field_validator("name")
    @classmethod
    def _name_safe(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("must be 1-32 of a-z 0-9 _ - and start with a letter or digit")
        return value

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(SOURCE_SCHEMES):
            raise ValueError(f"unknown source scheme; use one of {', '.join(SOURCE_SCHEMES)}")
        return value
