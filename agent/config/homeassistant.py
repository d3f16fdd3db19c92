"""``[mqtt.homeassistant]``: Home Assistant MQTT discovery (off by default; issue 20)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from agent.config.base import StrictModel, is_topic_prefix

# Labels end up inside Home Assistant templates and object ids: plain names only.
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .-]{0,63}$")


class HomeAssistantConfig(StrictModel):
    enabled: bool = Field(default=False, description="Publish Home Assistant discovery configs.")
    discovery_prefix: str = Field(
        default="homeassistant", description="Home Assistant's discovery prefix."
    )
    labels: list[str] = Field(
        default_factory=list,
        description="Detection labels that each get an 'object present' binary sensor.",
    )
    presence_off_s: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="A label's binary sensor turns off this long after its last detection.",
    )
    refresh_s: float = Field(
        default=10.0, gt=0, description="How often the update entities' state is re-read."
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix_safe(cls, value: str) -> str:
        if not is_topic_prefix(value):
            raise ValueError("must be a topic prefix without wildcards or edge slashes")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_plain(cls, value: list[str]) -> list[str]:
        bad = [label for label in value if not _LABEL.match(label)]
        if bad:
            raise ValueError(f"labels must be letters, digits, space, '_', '.' or '-': {bad}")
        return value
