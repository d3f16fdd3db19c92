"""MQTT link, outbox and telemetry sections."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from agent.config.base import StrictModel, is_topic_prefix
from agent.config.homeassistant import HomeAssistantConfig


class MqttConfig(StrictModel):
    url: str = Field(
        default="mqtt://127.0.0.1:1883", description="Broker URL, mqtt://host:port or mqtts://."
    )
    username: str = Field(default="", description="User name; empty for none.")
    password: SecretStr = Field(
        default=SecretStr(""), description='Password, or "file:/path" to read it from a file.'
    )
    ca: str = Field(default="", description="CA bundle for mqtts://; empty uses the system store.")
    cert: str = Field(default="", description="Client certificate for mutual TLS.")
    key: str = Field(default="", description="Client private key for mutual TLS.")
    key_password: SecretStr = Field(
        default=SecretStr(""), description='Passphrase of the client key, or "file:/path".'
    )
    topic_root: str = Field(default="ea/v1", description="Prefix of every topic.")
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="Keepalive interval.")
    reconnect_min_s: float = Field(
        default=1.0, gt=0, description="First reconnect backoff ceiling."
    )
    reconnect_max_s: float = Field(default=120.0, gt=0, description="Reconnect backoff cap.")
    stable_after_s: float = Field(
        default=60.0, ge=0, description="Connected this long resets the backoff."
    )
    busy_backoff_s: float = Field(
        default=30.0, ge=0, description="Extra wait when the broker says it is busy or over quota."
    )
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, description="Home Assistant MQTT discovery."
    )

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must be mqtt://host[:port] or mqtts://host[:port]")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from exc
        return value

    @field_validator("topic_root")
    @classmethod
    def _topic_root_safe(cls, value: str) -> str:
        if not is_topic_prefix(value):
            raise ValueError("must be a non-empty topic prefix without wildcards or edge slashes")
        return value


class OutboxConfig(StrictModel):
    max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=64 * 1024, description="Disk budget of the outbox in bytes."
    )
    alarm_ttl_s: float = Field(default=7 * 86400, gt=0, description="How long alarms are kept.")
    detection_ttl_s: float = Field(default=86400, gt=0, description="How long detections are kept.")
    stats_ttl_s: float = Field(default=3600, gt=0, description="How long stats are kept.")
    drain_rate_per_s: float = Field(
        default=50.0, gt=0, description="Backlog messages per second after a reconnect."
    )
    fsync: Literal["always", "batch", "off"] = Field(
        default="batch",
        description="always: fsync every event; batch: fsync at most every batch_interval_s.",
    )
    batch_interval_s: float = Field(default=1.0, gt=0, description="Commit interval in batch mode.")


class TelemetryConfig(StrictModel):
    stats_interval_s: float = Field(default=30.0, gt=0, description="Period of the stats message.")
    health_interval_s: float = Field(
        default=10.0, gt=0, description="Period of health evaluation; published on change."
    )
    drift_window_events: int = Field(
        default=500, ge=10, description="Events per drift window (the first is the baseline)."
    )
    drift_hist_limit: float = Field(
        default=0.3, gt=0, le=1, description="Confidence histogram distance (0-1) that alarms."
    )
    drift_rate_limit: float = Field(
        default=0.5, gt=0, description="Relative change of detections per event that alarms."
    )
    # The latest snapshot as a raw JPEG on <base>/snapshot/<camera> (Home Assistant's image
    # entity, the console): published when Home Assistant discovery is on or an interval is set.
    snapshot_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="Publish each camera's snapshot this often; 0: only on the snapshot command.",
    )
    snapshot_max_width_px: int = Field(
        default=640, ge=64, le=1920, description="Published snapshots wider are scaled down."
    )
    snapshot_max_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        le=1024 * 1024,
        description="JPEG budget of a published snapshot (keep it under the broker's limit).",
    )
    snapshot_quality: int = Field(
        default=75, ge=10, le=95, description="JPEG quality of published snapshots (first try)."
    )
