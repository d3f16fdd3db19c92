"""Model update section."""

from __future__ import annotations

from pydantic import Field, field_validator

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
    block_on_stale_heartbeat: bool = Field(
        default=False,
        description=(
            "Refuse new deployments (failed/expired) while the newest signed fleet heartbeat "
            "is expired or none was received; off: a stale heartbeat only raises the "
            "freeze_suspected alarm."
        ),
    )
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
    https_enabled: bool = Field(
        default=True,
        description=(
            "Fetch bundle files from the manifest's https:// URL when it names one "
            "(off: always pull chunks over MQTT)."
        ),
    )
    https_ca_file: str = Field(
        default="",
        description=(
            "CA bundle (PEM) that replaces the system store for HTTPS bundle downloads; "
            "empty uses the system store. Certificates are always verified."
        ),
    )
    https_connect_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="TCP and TLS connect timeout of an HTTPS download."
    )
    https_read_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Longest wait for bytes on an HTTPS download before it is retried.",
    )
    https_allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names a manifest's HTTPS URL may name (exact, case-insensitive); "
            "empty allows any host."
        ),
    )
    https_max_range_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="Largest byte range asked for in one HTTPS request.",
    )

    @field_validator("https_allowed_hosts")
    @classmethod
    def _hosts_lower(cls, hosts: list[str]) -> list[str]:
        cleaned = [h.strip().lower() for h in hosts]
        if any(not h or "/" in h or "@" in h or " " in h for h in cleaned):
            msg = "https_allowed_hosts holds bare host names or IPs (no scheme, path or user)"
            raise ValueError(msg)
        return cleaned
