"""The root config model and its cross-section checks."""

from __future__ import annotations

from pydantic import Field, model_validator

from agent.config.base import StrictModel
from agent.config.board import BackendName, BoardConfig
from agent.config.camera import CameraConfig
from agent.config.device import (
    ControlConfig,
    DeviceConfig,
    LoggingConfig,
    StorageConfig,
    TrustConfig,
)
from agent.config.model import ModelConfig
from agent.config.update import UpdateConfig
from agent.config.uplink import MqttConfig, OutboxConfig, TelemetryConfig
from agent.config.web import WebConfig


class AgentConfig(StrictModel):
    device: DeviceConfig = Field(default_factory=DeviceConfig, description="Identity.")
    board: BoardConfig = Field(default_factory=BoardConfig, description="Board profile facts.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Broker link.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="State directory.")
    trust: TrustConfig = Field(default_factory=TrustConfig, description="Update trust root.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log output.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Store-and-forward.")
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig, description="Stats cadence."
    )
    update: UpdateConfig = Field(default_factory=UpdateConfig, description="Model updates.")
    control: ControlConfig = Field(default_factory=ControlConfig, description="Local socket.")
    web: WebConfig = Field(default_factory=WebConfig, description="Technician's live view.")
    cameras: list[CameraConfig] = Field(default_factory=list, description="Camera sources.")
    models: list[ModelConfig] = Field(default_factory=list, description="Models per slot.")

    @model_validator(mode="after")
    def _cross_checks(self) -> AgentConfig:
        verify_unique_names(self)
        verify_model_cameras_exist(self)
        return self

    def backend_for(self, model: ModelConfig) -> BackendName:
        return model.backend or self.board.default_backend

    def threads_for(self, model: ModelConfig) -> int:
        return model.threads or self.board.inference_threads

    def cameras_for(self, model: ModelConfig) -> list[CameraConfig]:
        wanted = set(model.cameras)
        return [c for c in self.cameras if not wanted or c.name in wanted]


def verify_unique_names(cfg: AgentConfig) -> None:
    cams = [c.name for c in cfg.cameras]
    dup_cams = sorted({n for n in cams if cams.count(n) > 1})
    if dup_cams:
        raise ValueError(f"camera names must be unique, repeated: {', '.join(dup_cams)}")
    slots = [m.slot for m in cfg.models]
    dup_slots = sorted({s for s in slots if slots.count(s) > 1})
    if dup_slots:
        raise ValueError(f"model slots must be unique, repeated: {', '.join(dup_slots)}")


def verify_model_cameras_exist(cfg: AgentConfig) -> None:
    known = {c.name for c in cfg.cameras}
    for model in cfg.models:
        missing = [name for name in model.cameras if name not in known]
        if missing:
            raise ValueError(
                f"model slot {model.slot!r} names unknown cameras: {', '.join(missing)}"
            )
