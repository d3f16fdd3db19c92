"""Last-known-good wall time, so a clock reset to 1970 reads as clock_invalid, not expired.

The agent records the wall time whenever it has reason to trust it (a verified
signed document, a successful broker session); it never moves backwards.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.fsutil import atomic_write_json

FILE_NAME = "last_known_good_time.json"
# No device of ours was built before this (2025-01-01T00:00:00Z).
BUILD_FLOOR_WALL_S = 1_735_689_600.0


def _path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def read_last_known_good(state_dir: Path) -> float | None:
    try:
        payload = json.loads(_path(state_dir).read_text(encoding="utf-8"))
        value = float(payload["wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value


def record_good_time(state_dir: Path, wall_s: float) -> float:
    """Persist ``wall_s`` if it is later than what is stored; returns the stored value."""
    current = read_last_known_good(state_dir)
    if current is not None and current >= wall_s:
        return current
    atomic_write_json(_path(state_dir), {"wall_s": wall_s})
    return wall_s


def clock_is_plausible(now_wall_s: float, state_dir: Path) -> bool:
    """True when ``now`` is not before the build floor nor the last known good time."""
    floor = max(BUILD_FLOOR_WALL_S, read_last_known_good(state_dir) or 0.0)
    return now_wall_s >= floor
