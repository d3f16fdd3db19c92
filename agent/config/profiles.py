"""Board profiles: TOML files in firmware_profiles/, validated by the config models."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from agent.assets import shipped_dir
from agent.errors import ConfigError, ProfileNotFoundError
from agent.tomlcompat import TOMLDecodeError, load_toml

PROFILES_ENV = "EDGE_AGENT_PROFILES_DIR"


def profile_dirs() -> list[Path]:
    """Where profiles are looked for, first match wins."""
    dirs: list[Path] = []
    if env := os.environ.get(PROFILES_ENV):
        dirs.append(Path(env))
    dirs += [
        Path("/etc/edge-agent/firmware_profiles"),
        Path(sys.prefix) / "share/edge-agent/firmware_profiles",
        Path("/usr/share/edge-agent/firmware_profiles"),
    ]
    # Inside the installed package (copied in at build time), else a checkout's.
    if shipped := shipped_dir("firmware_profiles"):
        dirs.append(shipped)
    return dirs


def known_profiles() -> list[str]:
    names: set[str] = set()
    for directory in profile_dirs():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.toml"))
    return sorted(names)


def profile_path(name: str) -> Path:
    # A name is a file stem, never a path: refuse separators and dots up front.
    if name and "/" not in name and not name.startswith("."):
        for directory in profile_dirs():
            candidate = directory / f"{name}.toml"
            if candidate.is_file():
                return candidate
    raise ProfileNotFoundError(name, known_profiles())


def load_profile(name: str) -> dict[str, Any]:
    path = profile_path(name)
    try:
        return load_toml(path)
    except (OSError, TOMLDecodeError) as exc:
        raise ConfigError(f"profile {name} ({path}) cannot be read: {exc}") from exc
