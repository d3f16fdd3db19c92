"""The desired-config layer: what an operator's MQTT ``config`` command asked for.

Stored as ``<state_dir>/desired_config.json`` (``{"version": N, "config": {...}}``,
written atomically, mode 0600 because it may carry secrets) and merged between the
config file and the environment: profile < file < desired < env < flags.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.config.loader import DesiredLayer, LoadedConfig, load_config
from agent.errors import ConfigError, ConfigIssue
from agent.fsutil import atomic_write_json
from agent.log import get_logger

log = get_logger(__name__)

FILE_NAME = "desired_config.json"
# Keys a remote config may not change: the layer lives in the state dir, and the id is
# the MQTT identity the broker's ACL is bound to.
LOCKED_KEYS: tuple[tuple[str, str], ...] = (("storage", "state_dir"), ("device", "id"))


def desired_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def read_desired(state_dir: Path) -> DesiredLayer | None:
    """The stored layer; None when there is none. A corrupt file is a ConfigError."""
    path = desired_path(state_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        issue = ConfigIssue(str(path), "(syntax)", "", f"not valid JSON: {exc}")
        raise ConfigError(f"{path}: not valid JSON", [issue]) from exc
    version = doc.get("version") if isinstance(doc, dict) else None
    tree = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(tree, dict):
        issue = ConfigIssue(str(path), "(top level)", "", "needs an integer version and a config")
        raise ConfigError(f"{path}: not a desired config", [issue])
    return DesiredLayer(version, tree)


def write_desired(state_dir: Path, layer: DesiredLayer, **meta: Any) -> None:
    doc = {"version": layer.version, "config": layer.tree, **meta}
    atomic_write_json(desired_path(state_dir), doc, mode=0o600)


def locked_key_issues(layer: DesiredLayer) -> list[ConfigIssue]:
    issues = []
    for section, key in LOCKED_KEYS:
        table = layer.tree.get(section)
        if isinstance(table, dict) and key in table:
            issues.append(
                ConfigIssue(
                    layer.label, f"{section}.{key}", repr(table[key]), "cannot be set remotely"
                )
            )
    return issues


def load_with_layer(
    base: LoadedConfig, layer: DesiredLayer, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Re-load ``base``'s file and flags with ``layer`` in between; ConfigError when invalid."""
    issues = locked_key_issues(layer)
    if issues:
        raise ConfigError(f"{len(issues)} problem(s) in {layer.label}", issues)
    return load_config(base.path, environ, base.assignments, desired=layer)


def load_with_desired(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    assignments: Sequence[str] = (),
    *,
    strict: bool = True,
) -> LoadedConfig:
    """The config with the stored desired layer, if the state dir has one.

    ``strict=False`` (the daemon): a stored layer that no longer validates is logged and
    left out, so a bad remote config can never keep the agent from starting.
    """
    base = load_config(path, environ, assignments)
    state_dir = Path(base.config.storage.state_dir)
    if not state_dir.is_dir():
        return base
    try:
        layer = read_desired(state_dir)
        return base if layer is None else load_with_layer(base, layer, environ)
    except ConfigError as exc:
        if strict:
            raise
        log.error(  # noqa: TRY400 - the issues say it all; a traceback adds nothing
            "desired_config_ignored",
            error=str(exc),
            issues=[i.render() for i in exc.issues],
        )
        return base


def flatten(tree: Any, prefix: tuple[str | int, ...] = ()) -> dict[tuple[str | int, ...], Any]:
    """Leaves of a dumped config by key path (lists of tables by index, other lists whole)."""
    if isinstance(tree, dict):
        out: dict[tuple[str | int, ...], Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, (*prefix, key)))
        return out
    if isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        out = {}
        for index, value in enumerate(tree):
            out.update(flatten(value, (*prefix, index)))
        return out
    return {prefix: tree}
