"""Device identity, storage, trust and logging sections."""

from __future__ import annotations

import re
import socket
from typing import Literal

from pydantic import Field, field_validator

from agent.config.base import StrictModel

# Used in MQTT topics and as the client id: no wildcards, separators or spaces.
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _default_device_id() -> str:
    host = socket.gethostname().split(".")[0]
    return host if DEVICE_ID_RE.match(host) else "edge-device"


class DeviceConfig(StrictModel):
    id: str = Field(
        default_factory=_default_device_id,
        description="Device id, also the MQTT client id; defaults to the host name.",
    )
    fleet: str = Field(default="default", description="Fleet the device belongs to.")
    profile: str = Field(
        default="x86-gateway", description="Board profile, a file in firmware_profiles/."
    )

    @field_validator("id", "fleet")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        if not DEVICE_ID_RE.match(value):
            raise ValueError("must be 1-64 of A-Z a-z 0-9 . _ - and start with a letter or digit")
        return value


class StorageConfig(StrictModel):
    state_dir: str = Field(
        default="/var/lib/edge-agent",
        description="State directory: models, update journal, trust floors, outbox.",
    )
    min_free_mb: int = Field(
        default=64, ge=0, description="Free space below which storage health degrades, in MB."
    )


class TrustConfig(StrictModel):
    root: str = Field(
        default="/etc/edge-agent/trust/root.json",
        description="Provisioned root metadata (out of band).",
    )


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level written."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a TTY, JSON lines otherwise (journald)."
    )


class ControlConfig(StrictModel):
    socket_path: str = Field(
        default="/run/edge-agent/control.sock",
        description=(
            "Unix socket where the running daemon answers status, diag and local update "
            "requests; in a runtime dir, never inside the state dir."
        ),
    )
    config_trial_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "A remote config must have the agent connected and healthy within this long "
            "after its restart, else the last good config is restored."
        ),
    )
    config_healthy_s: float = Field(
        default=10.0,
        ge=0,
        description="How long connected and healthy must last to confirm a remote config.",
    )
