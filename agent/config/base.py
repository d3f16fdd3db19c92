"""Shared pieces of the config models: strict base class and ``file:`` secrets."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from agent.errors import SecretError

SECRET_PREFIX = "file:"  # noqa: S105 - a reference prefix, not a password


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def is_topic_prefix(value: str) -> bool:
    """A non-empty MQTT topic prefix: no wildcards, no slash at either end."""
    edge_slash = value.startswith("/") or value.endswith("/")
    return bool(value) and not edge_slash and not any(c in value for c in "#+")


def resolve_secret(secret: SecretStr, key_path: str) -> str:
    """Return the secret's value, reading it from disk when written as ``file:/path``.

    Read at use time, not at load time, so a rotated password file is picked up
    on reconnect and the value never sits in the config tree or its dumps.
    """
    raw = secret.get_secret_value()
    if not raw.startswith(SECRET_PREFIX):
        return raw
    path = Path(raw[len(SECRET_PREFIX) :])
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SecretError(key_path, str(path), exc.strerror or type(exc).__name__) from exc
