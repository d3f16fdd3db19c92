"""Device health: per component ok/degraded/down, the worst of them overall (pure functions)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from agent.timeguard import clock_is_plausible

ORDER = {"ok": 0, "degraded": 1, "down": 2}
Component = dict[str, str]  # {"status": ..., "detail": ...}


def worst(statuses: list[str]) -> str:
    return max(statuses, key=lambda s: ORDER.get(s, 2), default="ok")


def uplink_component(connected: bool, url: str) -> Component:
    if connected:
        return {"status": "ok", "detail": f"connected to {url}"}
    return {"status": "degraded", "detail": f"not connected to {url}; buffering in the outbox"}


def storage_component(state_dir: Path, min_free_mb: int) -> Component:
    try:
        free_mb = shutil.disk_usage(state_dir).free / 1e6
    except OSError as exc:
        return {"status": "down", "detail": f"state dir unusable: {exc.strerror}"}
    if free_mb < min_free_mb:
        return {"status": "degraded", "detail": f"{free_mb:.0f} MB free < {min_free_mb} MB"}
    return {"status": "ok", "detail": f"{free_mb:.0f} MB free"}


def clock_component(now_wall_s: float, state_dir: Path) -> Component:
    if clock_is_plausible(now_wall_s, state_dir):
        return {"status": "ok", "detail": "wall clock plausible"}
    return {"status": "degraded", "detail": "wall clock before the last known good time"}


def health_document(components: dict[str, Component], ts: float) -> dict[str, Any]:
    """The retained ``health`` payload (CONTRACT §4)."""
    return {
        "status": worst([c.get("status", "down") for c in components.values()]),
        "components": dict(sorted(components.items())),
        "ts": round(ts, 3),
    }


def _statuses(doc: dict[str, Any]) -> dict[str, Any]:
    return {name: c.get("status") for name, c in (doc.get("components") or {}).items()}


def same_health(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Same overall and per-component status: the retained message is re-published only
    when one changes, not when a detail's text does ("812 MB free" → "811 MB free")."""
    return a is not None and a.get("status") == b["status"] and _statuses(a) == _statuses(b)
