"""The MQTT session counter: one more per connection attempt, persisted in the state dir."""

from __future__ import annotations

import json
from pathlib import Path

from agent.fsutil import atomic_write_json

FILE_NAME = "mqtt_session.json"


def read_session(state_dir: Path) -> int:
    try:
        return int(json.loads((state_dir / FILE_NAME).read_text(encoding="utf-8"))["session"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def next_session(state_dir: Path) -> int:
    """Persist and return the next session number (written before the will carries it)."""
    session = read_session(state_dir) + 1
    atomic_write_json(state_dir / FILE_NAME, {"session": session})
    return session
