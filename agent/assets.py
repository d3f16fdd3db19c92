"""Where the sample models, photos and clip fetched at set-up time live."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ASSETS_ENV = "EDGE_AGENT_ASSETS"


def asset_dirs() -> list[Path]:
    dirs: list[Path] = []
    if env := os.environ.get(ASSETS_ENV):
        dirs.append(Path(env))
    dirs += [
        Path(__file__).resolve().parents[1] / "assets",  # source checkout
        Path(sys.prefix) / "share/edge-agent",
        Path("/usr/share/edge-agent"),
    ]
    return dirs


def find_asset(relative: str) -> Path | None:
    """``find_asset("models/face_detection_short_range.tflite")`` → first existing match."""
    for directory in asset_dirs():
        candidate = directory / relative
        if candidate.exists():
            return candidate
    return None
