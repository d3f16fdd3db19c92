"""The desired-config layer: what an operator's MQTT ``config`` command asked for.

Stored as ``<state_dir>/desired_config.json`` (``{"version": N, "config": {...}}``,
written atomically, mode 0600) and merged between the config file and the environment:
profile < file < desired < env < flags. Only keys on the allow-list
(``agent.config.allowlist``) may be in it.

A new layer is applied on trial, like a model: it is stored with ``"state": "trial"``
next to the last good one (``desired_config.good.json``; absent = the file alone). The
daemon confirms it once it is connected and healthy (``confirm_trial``), or reverts to the
last good layer by itself (``revert_trial``): when the deadline passes, when the layer no
longer validates, or when the daemon starts a second time with it unconfirmed (it crashed
or was restarted mid-trial). A reverted version is remembered in
``desired_config.reverted.json`` so that it cannot be sent again unchanged.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.config.allowlist import expand_lists, remote_issues
from agent.config.loader import DesiredLayer, LoadedConfig, load_config, read_config_file
from agent.errors import ConfigError, ConfigIssue
from agent.fsutil import atomic_write_json
from agent.log import get_logger

log = get_logger(__name__)

FILE_NAME = "desired_config.json"
GOOD_NAME = "desired_config.good.json"
REVERTED_NAME = "desired_config.reverted.json"
TRIAL, GOOD = "trial", "good"
# Starts a trial layer gets: the one after the config command's restart. Another start
# before it was confirmed means it crashed or hung the agent: revert.
MAX_TRIAL_STARTS = 1


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


def layer_issues(base: LoadedConfig, layer: DesiredLayer) -> list[ConfigIssue]:
    """Keys of ``layer`` off the remote allow-list (against the config file's names)."""
    return remote_issues(layer.tree, _file_tree(base), layer.label)


def _file_tree(base: LoadedConfig) -> dict[str, Any]:
    return read_config_file(base.path) if base.path is not None else {}


def load_with_layer(
    base: LoadedConfig, layer: DesiredLayer, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Re-load ``base``'s file and flags with ``layer`` in between; ConfigError when invalid."""
    issues = layer_issues(base, layer)
    if issues:
        raise ConfigError(f"{len(issues)} key(s) in {layer.label} not allowed remotely", issues)
    expanded = DesiredLayer(layer.version, expand_lists(layer.tree, _file_tree(base)))
    return load_config(base.path, environ, base.assignments, desired=expanded)


def load_with_desired(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    assignments: Sequence[str] = (),
    *,
    strict: bool = True,
) -> LoadedConfig:
    """The config with the stored desired layer, if the state dir has one.

    ``strict=False``: a stored layer that no longer validates is logged and left out.
    """
    base = load_config(path, environ, assignments)
    state_dir = Path(base.config.storage.state_dir)
    if not state_dir.is_dir():
        return base
    loaded = _with_stored_layer(base, state_dir, environ, strict=strict)
    return loaded if loaded is not None else base


def _with_stored_layer(
    base: LoadedConfig, state_dir: Path, environ: Mapping[str, str] | None, *, strict: bool
) -> LoadedConfig | None:
    """``base`` with the stored layer; None when it does not validate (and not ``strict``)."""
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
        return None


def load_for_daemon(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    assignments: Sequence[str] = (),
    *,
    now_s: float,
) -> tuple[LoadedConfig, int | None]:
    """The daemon's config and the desired version on trial in this run (None: no trial).

    Never fails for the desired layer's sake: a trial layer that does not validate, or that
    already had its start, is reverted here; a good one that does not validate is left out.
    """
    base = load_config(path, environ, assignments)
    state_dir = Path(base.config.storage.state_dir)
    if not state_dir.is_dir():
        return base, None
    try:
        trial = advance_trial(state_dir, now_s)
    except OSError as exc:
        # Cannot count the start (full or read-only disk): run what is stored, untimed.
        log.warning("desired_config_trial_unrecorded", error=str(exc))
        trial = None
    loaded = _with_stored_layer(base, state_dir, environ, strict=False)
    if loaded is None and trial is not None:
        trial = None
        with contextlib.suppress(OSError):  # else: left out anyway, reverted next start
            revert_trial(state_dir, "the config does not validate at start-up", now_s)
            loaded = _with_stored_layer(base, state_dir, environ, strict=False)
    return (loaded if loaded is not None else base), trial


# --- trial -------------------------------------------------------------------------------


def _read_doc(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def reverted(state_dir: Path) -> dict[str, Any] | None:
    """The last reverted layer ``{version, reason, at, restored_version}``, if any."""
    return _read_doc(state_dir / REVERTED_NAME)


def trial_state(state_dir: Path) -> str | None:
    doc = _read_doc(desired_path(state_dir))
    return None if doc is None else str(doc.get("state", GOOD))


def begin_trial(state_dir: Path, layer: DesiredLayer, accepted_at: float) -> None:
    """Store ``layer`` on trial; the layer in effect now (if confirmed) becomes the last good."""
    current = _read_doc(desired_path(state_dir))
    if current is None:
        _remove(state_dir / GOOD_NAME)  # the last good config is the file alone
    elif current.get("state", GOOD) == GOOD:
        atomic_write_json(state_dir / GOOD_NAME, {**current, "state": GOOD}, mode=0o600)
    # else: a layer still on trial is replaced; the last good stays what it was.
    write_desired(state_dir, layer, accepted_at=accepted_at, state=TRIAL, starts=0)
    _remove(state_dir / REVERTED_NAME)


def accept_as_good(state_dir: Path, layer: DesiredLayer, accepted_at: float) -> None:
    """A layer that changes nothing effective needs no trial."""
    write_desired(state_dir, layer, accepted_at=accepted_at, state=GOOD)
    atomic_write_json(state_dir / GOOD_NAME, _read_doc(desired_path(state_dir)), mode=0o600)
    _remove(state_dir / REVERTED_NAME)


def advance_trial(state_dir: Path, now_s: float) -> int | None:
    """At start-up: count this start against the trial layer; revert when it had its start."""
    doc = _read_doc(desired_path(state_dir))
    if doc is None or doc.get("state") != TRIAL:
        return None
    starts = int(doc.get("starts", 0))
    if starts >= MAX_TRIAL_STARTS:
        revert_trial(state_dir, "the agent restarted before the trial confirmed it", now_s)
        return None
    atomic_write_json(desired_path(state_dir), {**doc, "starts": starts + 1}, mode=0o600)
    version = doc.get("version")
    return version if isinstance(version, int) else None


def confirm_trial(state_dir: Path, version: int) -> bool:
    """The trial layer ``version`` proved good: it becomes the last good one."""
    doc = _read_doc(desired_path(state_dir))
    if doc is None or doc.get("version") != version or doc.get("state") != TRIAL:
        return False
    good = {**doc, "state": GOOD}
    atomic_write_json(state_dir / GOOD_NAME, good, mode=0o600)
    atomic_write_json(desired_path(state_dir), good, mode=0o600)
    log.info("desired_config_confirmed", version=version)
    return True


def revert_trial(state_dir: Path, reason: str, now_s: float) -> dict[str, Any]:
    """Put the last good layer back (or none) and remember what was reverted and why."""
    doc = _read_doc(desired_path(state_dir)) or {}
    good = _read_doc(state_dir / GOOD_NAME)
    marker = {
        "version": doc.get("version"),
        "reason": reason,
        "at": round(now_s, 3),
        "restored_version": good.get("version") if good else None,
    }
    atomic_write_json(state_dir / REVERTED_NAME, marker, mode=0o600)
    if good is not None:
        atomic_write_json(desired_path(state_dir), {**good, "state": GOOD}, mode=0o600)
    else:
        _remove(desired_path(state_dir))
    log.error("desired_config_reverted", **marker)
    return marker


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
