"""What the daemon reports about itself: the control socket's status and the wanted alarms."""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.uplink.health import health_document

if TYPE_CHECKING:
    from agent.daemon.supervisor import Supervisor


def wanted_alarms(
    doc: dict[str, Any], drift: dict[str, dict[str, Any]]
) -> dict[str, tuple[str, str]]:
    """Alarms the health document and drift verdicts call for (name → severity, text)."""
    wanted = {
        f"{name.replace(':', '_')}_down": ("major", comp.get("detail", ""))
        for name, comp in doc["components"].items()
        if comp.get("status") == "down"
    }
    storage = doc["components"].get("storage", {})
    if storage.get("status") == "degraded":
        # Low space is only "degraded" in health, yet it is what takes agents down
        # (a full outbox, a refused update): alarm it before it becomes "down".
        wanted["storage_low"] = ("major", storage.get("detail", ""))
    for model, verdict in drift.items():
        if verdict["drifted"]:
            text = (
                f"histogram distance {verdict['histogram_distance']}, "
                f"rate change {verdict['rate_change']}"
            )
            wanted[f"drift_{model}"] = ("warning", text)
    return wanted


def status_document(sup: Supervisor) -> dict[str, Any]:
    """The control socket's ``status`` reply."""
    outbox = sup.outbox.snapshot() if sup.outbox else {}
    return {
        "ok": True,
        "daemon": {
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(sup.clock.monotonic_s() - sup.started_mono_s, 1),
            "started_at": dt.datetime.fromtimestamp(sup.started_wall_s, dt.timezone.utc)
            .isoformat()
            .replace("+00:00", "Z"),
        },
        "health": health_document(sup.health_components(), sup.clock.wall_s()),
        "stats": sup.pipeline.stats_snapshot() if sup.pipeline else {},
        "models": sup.pipeline.model_info() if sup.pipeline else {},
        "link": sup.link_info(),
        "outbox": {
            "depth": outbox.get("depth", 0),
            "bytes": outbox.get("bytes", 0),
            "dropped": outbox.get("dropped", {}),
        },
        "alarms": sup.alarms.snapshot() if sup.alarms else {},
        "config_version": sup.loaded.desired_version,
    }
