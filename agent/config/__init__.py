"""Configuration: pydantic models per section and the layered loader."""

from agent.config.base import StrictModel, resolve_secret
from agent.config.board import BackendName, BoardConfig
from agent.config.camera import CameraConfig
from agent.config.device import (
    ControlConfig,
    DeviceConfig,
    LoggingConfig,
    StorageConfig,
    TrustConfig,
)
from agent.config.loader import (
    LoadedConfig,
    default_config_path,
    load_config,
    redacted_dump,
)
from agent.config.model import ModelConfig
from agent.config.profiles import known_profiles, load_profile
from agent.config.root import AgentConfig
from agent.config.update import UpdateConfig
from agent.config.uplink import MqttConfig, OutboxConfig, TelemetryConfig

__all__ = [
    "AgentConfig",
    "BackendName",
    "BoardConfig",
    "CameraConfig",
    "ControlConfig",
    "DeviceConfig",
    "LoadedConfig",
    "LoggingConfig",
    "ModelConfig",
    "MqttConfig",
    "OutboxConfig",
    "StorageConfig",
    "StrictModel",
    "TelemetryConfig",
    "TrustConfig",
    "UpdateConfig",
    "default_config_path",
    "known_profiles",
    "load_config",
    "load_profile",
    "redacted_dump",
    "resolve_secret",
]
