"""The ``config`` command: validate a desired config, persist it atomically, then apply it.

Only allow-listed keys pass (``agent.config.allowlist``; others → ``not_allowed`` naming
each key). Apply = a clean restart (exit 75, systemd starts us again) with the layer on
trial (``agent.config.desired``); nothing is written when validation fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config.desired import (
    accept_as_good,
    begin_trial,
    flatten,
    layer_issues,
    load_with_layer,
    read_desired,
    reverted,
)
from agent.config.loader import DesiredLayer, LoadedConfig, render_key_path
from agent.config.root import AgentConfig
from agent.errors import CommandError, ConfigError, ConfigIssue, Reason
from agent.log import get_logger
from agent.uplink.commands import require

log = get_logger(__name__)


def stored_version(state_dir: Path) -> int:
    """The version a new config must exceed: the stored one, or a reverted one above it."""
    marker = (reverted(state_dir) or {}).get("version")
    floor = marker if isinstance(marker, int) else 0
    try:
        layer = read_desired(state_dir)
    except ConfigError as exc:
        # A corrupt stored layer is ignored at start-up too; any new version replaces it.
        log.warning("desired_config_unreadable", error=str(exc))
        return floor
    return max(layer.version if layer is not None else 0, floor)


def _errors(issues: list[ConfigIssue]) -> list[dict[str, str]]:
    return [
        {"key_path": i.key_path, "message": i.message, "value": i.value, "source": i.source}
        for i in issues
    ]


def changed_keys(old: AgentConfig, new: AgentConfig) -> list[str]:
    """Key paths whose effective value differs (SecretStr compares by value)."""
    before, after = flatten(old.model_dump()), flatten(new.model_dump())
    return sorted(
        render_key_path(k)
        for k in before.keys() | after.keys()
        if before.get(k, ...) != after.get(k, ...)
    )


def shadowed_keys(layer: DesiredLayer, loaded: LoadedConfig) -> list[dict[str, str]]:
    """Desired keys that a higher layer (environment, flags) overrides."""
    out = []
    for path in flatten(layer.tree):
        source = loaded.sources.get(path, layer.label)
        if source != layer.label:
            out.append({"key_path": render_key_path(path), "source": source})
    return out


def validate_desired(
    current: LoadedConfig, state_dir: Path, req: dict[str, Any]
) -> tuple[DesiredLayer, LoadedConfig]:
    """The layer and the config it yields, or CommandError; writes nothing."""
    version = require(req, "version", int)
    tree = require(req, "config", dict)
    if version < 1:
        raise CommandError(Reason.MALFORMED, "version must be a positive integer")
    have = stored_version(state_dir)
    if version <= have:
        raise CommandError(
            Reason.VERSION_CONFLICT,
            f"version {version} is not above the stored version {have}",
            current_version=have,
        )
    layer = DesiredLayer(version, tree)
    refused = layer_issues(current, layer)
    if refused:
        keys = sorted({i.key_path for i in refused})
        log.warning("desired_config_not_allowed", version=version, keys=keys)
        raise CommandError(
            Reason.NOT_ALLOWED,
            f"not allowed remotely: {', '.join(keys)}",
            keys=keys,
            errors=_errors(refused),
        )
    try:
        loaded = load_with_layer(current, layer)
    except ConfigError as exc:
        errors = _errors(exc.issues) or [
            {"key_path": "(top level)", "message": str(exc), "value": "", "source": ""}
        ]
        raise CommandError(Reason.INVALID_CONFIG, "invalid config", errors=errors) from exc
    return layer, loaded


def persist_desired(
    current: LoadedConfig, state_dir: Path, layer: DesiredLayer, loaded: LoadedConfig, ts: float
) -> dict[str, Any]:
    """Write the accepted layer; the result document (restart needed when anything changed)."""
    changed = changed_keys(current.config, loaded.config)
    if changed:
        begin_trial(state_dir, layer, accepted_at=round(ts, 3))
    else:
        accept_as_good(state_dir, layer, accepted_at=round(ts, 3))
    log.info("desired_config_accepted", version=layer.version, changed=changed)
    return {
        "version": layer.version,
        "changed": changed,
        "restart_required": changed,
        "shadowed": shadowed_keys(layer, loaded),
        "restarting": bool(changed),
        "trial": bool(changed),
        "trial_s": current.config.control.config_trial_s,
    }
