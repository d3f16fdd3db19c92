"""Model update section."""

from __future__ import annotations

from pydantic import Field

from agent.config.base import StrictModel


class UpdateConfig(StrictModel):
    enabled: bool = Field(default=True, description="Accept model updates over MQTT.")
    max_model_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024, description="Largest model bundle accepted, in bytes."
    )
    trial_s: float = Field(
        default=60.0, gt=0, description="How long a new model runs on trial before commit."
    )
    transfer_deadline_s: float = Field(
        default=3600.0, gt=0, description="Overall time a transfer may take (slow_transfer)."
    )
    keep_versions: int = Field(default=2, ge=2, le=10, description="Versions kept per slot.")
    max_transitions: int = Field(
        default=28,
        ge=4,
        le=1000,
        description="Journal transitions per deployment before it ends as inconsistent.",
    )
    compat_facts: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Device facts matched against a manifest's compat block, over the detected ones "
            "(e.g. compute_capability, tensorrt)."
        ),
    )
