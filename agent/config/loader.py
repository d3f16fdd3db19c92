"""Build one frozen AgentConfig from profile < file < environment < flags.

Each layer is a plain dict. Every leaf remembers which layer set it, so a
validation error can name the file, variable or flag the bad value came from.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from agent.config.device import DeviceConfig
from agent.config.paths import resolve_relative
from agent.config.profiles import load_profile
from agent.config.root import AgentConfig
from agent.errors import ConfigError, ConfigIssue
from agent.tomlcompat import TOMLDecodeError, load_toml, loads_toml

DEFAULT_CONFIG_PATH = "/etc/edge-agent/agent.toml"
CONFIG_PATH_ENV = "EDGE_AGENT_CONFIG"
ENV_PREFIX = "EDGE_AGENT__"
SECRET_KEYS = frozenset({"password", "key_password", "passphrase"})
REDACTED = "<redacted>"

Path_ = tuple[str | int, ...]
_INDEX_RE = re.compile(r"\[(\d+)\]")


@dataclass
class LoadedConfig:
    config: AgentConfig
    path: Path | None
    profile: str
    sources: dict[Path_, str] = field(default_factory=dict)
    assignments: tuple[str, ...] = ()  # the --set flags, kept to re-load with a new layer
    desired_version: int | None = None  # version of the desired layer merged in, if any


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


def render_key_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def parse_key_path(text: str) -> Path_:
    """``cameras[0].fps`` or ``cameras.0.fps`` → ("cameras", 0, "fps")."""
    normalised = _INDEX_RE.sub(r".\1", text.strip())
    parts: list[str | int] = []
    for raw in normalised.split("."):
        if not raw:
            raise ValueError(f"empty segment in key path {text!r}")
        parts.append(int(raw) if raw.isdigit() else raw.lower())
    return tuple(parts)


def parse_scalar(raw: str) -> Any:
    """Read an env/flag value as a TOML value when it is one (15, true, ["a"]), else a string."""
    try:
        return loads_toml(f"v = {raw}")["v"]
    except TOMLDecodeError:
        return raw


def _record(tree: Any, source: str, prefix: Path_, sources: dict[Path_, str]) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            _record(value, source, (*prefix, key), sources)
    elif isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        for index, value in enumerate(tree):
            _record(value, source, (*prefix, index), sources)
    else:
        sources[prefix] = source


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists included) replaces the lower layer."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_path(tree: dict[str, Any], path: Path_, value: Any) -> None:
    """Set a value deep in a dict/list tree, creating tables and appending list items."""
    node: Any = tree
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        nxt: Any = value if last else ({} if isinstance(path[depth + 1], str) else [])
        if isinstance(part, int):
            if not isinstance(node, list):
                # ValueError: reported to the user as a config issue, not a programming bug.
                raise ValueError(f"{render_key_path(path[:depth])} is not a list")  # noqa: TRY004
            if part > len(node):
                raise ValueError(f"index {part} skips items; the list has {len(node)}")
            if part == len(node):
                node.append(nxt)
            elif last:
                node[part] = value
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ValueError(f"{render_key_path(path[:depth])} is not a table")  # noqa: TRY004
            if last or part not in node:
                node[part] = nxt
            node = node[part]


def env_overrides(environ: Mapping[str, str]) -> list[tuple[Path_, Any, str]]:
    found = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX):
            path = parse_key_path(name[len(ENV_PREFIX) :].replace("__", "."))
            found.append((path, parse_scalar(environ[name]), f"env:{name}"))
    return found


def flag_overrides(assignments: Sequence[str]) -> list[tuple[Path_, Any, str]]:
    found = []
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        found.append((parse_key_path(key), parse_scalar(raw), f"flag:--set {key.strip()}"))
    return found


def _shown_value(path: Sequence[str | int], value: Any) -> str:
    if any(isinstance(p, str) and p in SECRET_KEYS for p in path):
        return REDACTED
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _source_for(path: Path_, sources: Mapping[Path_, str], fallback: str) -> str:
    for cut in range(len(path), 0, -1):
        if path[:cut] in sources:
            return sources[path[:cut]]
    return fallback


def _model_at(loc: Path_) -> type[BaseModel] | None:
    """The config model class of the table at ``loc`` (list indexes pass through)."""
    model: type[BaseModel] = AgentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field_info = model.model_fields.get(part)
        if field_info is None:
            return None
        candidates = [field_info.annotation, *get_args(field_info.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _unknown_key_message(loc: Path_) -> str:
    """ "unknown key" with the closest known key of that table, when one is close."""
    model = _model_at(loc[:-1])
    key = str(loc[-1])
    known = sorted(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
    return f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")


def issues_from_validation(
    exc: ValidationError, sources: Mapping[Path_, str], fallback: str
) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc: Path_ = tuple(err["loc"])
        value = err.get("input")
        message = err["msg"]
        if err["type"] == "extra_forbidden" and loc:
            message = _unknown_key_message(loc)
        elif err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        issues.append(
            ConfigIssue(
                source=_source_for(loc, sources, fallback),
                key_path=render_key_path(loc) or "(top level)",
                # A whole table says nothing the message does not: only leaves are shown.
                value="" if isinstance(value, dict) else _shown_value(loc, value),
                message=message,
            )
        )
    return issues


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        return load_toml(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"config file cannot be read: {path}: {exc.strerror}") from exc
    except TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}",
            [ConfigIssue(str(path), "(syntax)", "", str(exc))],
        ) from exc


@dataclass(frozen=True)
class DesiredLayer:
    """Config pushed by the operator (MQTT ``config`` command), between file and environment."""

    version: int
    tree: dict[str, Any]

    @property
    def label(self) -> str:
        return f"mqtt:config v{self.version}"


def load_config(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    assignments: Sequence[str] = (),
    desired: DesiredLayer | None = None,
) -> LoadedConfig:
    """Load and validate. Raises ConfigError listing every problem, never a partial config.

    ``path=None`` means no file: profile, environment and flags only (demo, diag).
    Precedence: profile < file < ``desired`` < environment < flags.
    """
    env = os.environ if environ is None else environ
    sources: dict[Path_, str] = {}
    file_tree = read_config_file(path) if path is not None else {}
    if path is not None:  # relative paths in the file mean relative to the file
        file_tree = resolve_relative(file_tree, path.absolute().parent)
    file_label = str(path) if path is not None else "defaults"
    _record(file_tree, file_label, (), sources)

    overrides = [*env_overrides(env), *flag_overrides(assignments)]
    merged_top: dict[str, Any] = deep_merge({}, file_tree)
    if desired is not None:
        merged_top = deep_merge(merged_top, desired.tree)
        _record(desired.tree, desired.label, (), sources)
    issues: list[ConfigIssue] = []
    for key_path, value, origin in overrides:
        try:
            set_path(merged_top, key_path, value)
        except ValueError as exc:
            issues.append(ConfigIssue(origin, render_key_path(key_path), repr(value), str(exc)))
            continue
        _record(value, origin, key_path, sources)
    if issues:
        raise ConfigError(f"{len(issues)} problem(s) in overrides", issues)

    device = merged_top.get("device")
    profile_name = device.get("profile") if isinstance(device, dict) else None
    if profile_name is None:
        profile_name = DeviceConfig.model_fields["profile"].default
    if not isinstance(profile_name, str):
        raise ConfigError(
            "device.profile must be a string",
            [ConfigIssue(file_label, "device.profile", repr(profile_name), "must be a string")],
        )
    profile_tree = load_profile(profile_name)
    profile_tree.setdefault("board", {}).setdefault("name", profile_name)
    profile_sources: dict[Path_, str] = {}
    _record(profile_tree, f"profile:{profile_name}", (), profile_sources)
    merged = deep_merge(profile_tree, merged_top)

    try:
        config = AgentConfig.model_validate(merged)
    except ValidationError as exc:
        all_sources = {**profile_sources, **sources}
        found = issues_from_validation(exc, all_sources, file_label)
        raise ConfigError(f"{len(found)} problem(s) in the configuration", found) from exc
    return LoadedConfig(
        config,
        path,
        profile_name,
        {**profile_sources, **sources},
        tuple(assignments),
        desired.version if desired is not None else None,
    )


def redacted_dump(config: AgentConfig) -> dict[str, Any]:
    """The effective config as JSON-ready data with every secret masked."""
    dumped: dict[str, Any] = config.model_dump(mode="json")
    _mask(dumped)
    return dumped


def _mask(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_KEYS:
                node[key] = REDACTED if value else ""
            else:
                _mask(value)
    elif isinstance(node, list):
        for item in node:
            _mask(item)
