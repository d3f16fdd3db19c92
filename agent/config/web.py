"""``[web]``: the technician's live view on the device (off by default; issue 20 item 2)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, field_validator, model_validator

from agent.config.base import StrictModel


def split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8781")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """``host`` is this machine (also diag's test of a broker that plaintext never leaves)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(StrictModel):
    enabled: bool = Field(default=False, description="Serve the live view page.")
    listen: str = Field(
        default="127.0.0.1:8781", description="HOST:PORT; beyond loopback needs a password."
    )
    password: SecretStr = Field(
        default=SecretStr(""),
        description='Password for HTTP basic auth (user "technician"), or "file:/path".',
    )
    frame_interval_s: float = Field(
        default=1.0, ge=0.2, le=60, description="How often the page fetches a new frame."
    )
    max_width: int = Field(default=960, ge=160, le=4096, description="Frames wider are scaled.")
    quality: int = Field(default=70, ge=10, le=95, description="JPEG quality of the frames.")

    @field_validator("listen")
    @classmethod
    def _listen_shape(cls, value: str) -> str:
        split_listen(value)
        return value

    @model_validator(mode="after")
    def _exposed_needs_password(self) -> WebConfig:
        host, _port = split_listen(self.listen)
        if self.enabled and not is_loopback(host) and not self.password.get_secret_value():
            raise ValueError(f"listen {self.listen} is beyond loopback: set web.password")
        return self
