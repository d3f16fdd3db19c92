"""File references in a config: relative ones resolved against the config file's folder,
and a check that the files they name are there (``validate-config``).

A config file is read by a daemon started from ``/`` by systemd, by ``diag`` run from a
home folder and by ``validate-config`` run from anywhere: a relative path in it only means
one thing if it is relative to the file itself. Environment variables and ``--set`` flags
are typed at a shell, so theirs stay relative to the working directory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.base import SECRET_PREFIX

# (section, key) holding a plain path; "file:" secrets and camera sources are handled apart.
PATH_KEYS: tuple[tuple[str, str], ...] = (
    ("storage", "state_dir"),
    ("trust", "root"),
    ("control", "socket_path"),
    ("mqtt", "ca"),
    ("mqtt", "cert"),
    ("mqtt", "key"),
    ("update", "https_ca_file"),
)
SECRET_FILE_KEYS: tuple[tuple[str, str], ...] = (("mqtt", "password"), ("mqtt", "key_password"))
MODEL_PATH_KEYS = ("path", "labels_path")
SOURCE_PREFIXES = ("file:", "images:")
# Made by the agent when missing: not checked for existence.
CREATED_BY_AGENT = frozenset({("storage", "state_dir"), ("control", "socket_path")})


def _absolute(value: str, base: Path) -> str:
    if not value or value.startswith("~") or Path(value).is_absolute():
        return value
    return str(base / value)


def _with_prefix(value: str, prefixes: tuple[str, ...], base: Path) -> str:
    for prefix in prefixes:
        if value.startswith(prefix):
            return prefix + _absolute(value[len(prefix) :], base)
    return value


def resolve_relative(tree: dict[str, Any], base: Path) -> dict[str, Any]:
    """The file layer with its relative paths made absolute against ``base`` (a copy)."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    for section, key in PATH_KEYS:
        table = out.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            table[key] = _absolute(table[key], base)
    for section, key in SECRET_FILE_KEYS:
        table = out.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            table[key] = _with_prefix(table[key], (SECRET_PREFIX,), base)
    for name, keys, prefixes in (
        ("models", MODEL_PATH_KEYS, ()),
        ("cameras", ("source",), SOURCE_PREFIXES),
    ):
        items = out.get(name)
        if not isinstance(items, list):
            continue
        fixed = []
        for item in items:
            entry = dict(item) if isinstance(item, dict) else item
            for key in keys if isinstance(entry, dict) else ():
                value = entry.get(key)
                if isinstance(value, str):
                    entry[key] = (
                        _with_prefix(value, prefixes, base) if prefixes else _absolute(value, base)
                    )
            fixed.append(entry)
        out[name] = fixed
    return out


@dataclass(frozen=True, slots=True)
class Reference:
    key_path: str
    path: str
    severity: str  # "error": the agent cannot use it; "warning": it may appear later

    def render(self, source: str) -> str:
        return f"{source}: {self.key_path}: {self.path} does not exist"


def _references(config: Any) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """(key path, file, is_camera) for every file the config names."""
    for section, key in PATH_KEYS:
        if (section, key) in CREATED_BY_AGENT:
            continue
        value = getattr(getattr(config, section), key)
        if value:
            yield (section, key), str(value), False
    for section, key in SECRET_FILE_KEYS:
        raw = getattr(getattr(config, section), key).get_secret_value()
        if raw.startswith(SECRET_PREFIX):
            yield (section, key), raw[len(SECRET_PREFIX) :], False
    for index, model in enumerate(config.models):
        for key in MODEL_PATH_KEYS:
            value = getattr(model, key)
            if value:
                yield ("models", index, key), str(value), False
    for index, camera in enumerate(config.cameras):
        source = str(camera.source)
        for prefix in (*SOURCE_PREFIXES, "v4l2:"):
            if source.startswith(prefix):
                yield ("cameras", index, "source"), source[len(prefix) :], True


def missing_files(
    config: Any, sources: Mapping[tuple[str | int, ...], str]
) -> list[tuple[Reference, str]]:
    """Files the config names that are not there, each with the layer that named it.

    Cameras may be plugged in later and a default nobody wrote may not be used: warnings.
    """
    found = []
    for key_path, path, camera in _references(config):
        if Path(path).expanduser().exists():
            continue
        source = sources.get(key_path, "default")
        chosen = not (source == "default" or source.startswith("profile:"))
        severity = "error" if chosen and not camera else "warning"
        rendered = ".".join(f"[{p}]" if isinstance(p, int) else p for p in key_path)
        found.append((Reference(rendered.replace(".[", "["), path, severity), source))
    return found
