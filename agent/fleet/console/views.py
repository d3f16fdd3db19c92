"""Table rows and page text for the console (pure functions over ``device_row`` dicts)."""

from __future__ import annotations

import time
from typing import Any

from agent.fleet.fleetview import age

STATUS_FILTERS = ("all", "online", "offline", "ok", "degraded", "down", "alarms", "failing_op")
SORT_KEYS = ("device", "fleet", "online", "last_seen", "health", "op")
_HEALTH_RANK = {"down": 0, "degraded": 1, "ok": 2}


def matches(row: dict[str, Any], fleet: str, status: str) -> bool:
    if fleet and row.get("fleet") != fleet:
        return False
    op = row.get("operation") or {}
    checks = {
        "online": row["online"],
        "offline": not row["online"],
        "ok": row.get("health") == "ok",
        "degraded": row.get("health") == "degraded",
        "down": row.get("health") == "down",
        "alarms": bool(row.get("alarms")),
        "failing_op": op.get("status") == "failed",
    }
    return bool(checks.get(status, True))


def sort_key(key: str) -> Any:
    def value(row: dict[str, Any]) -> Any:
        if key == "fleet":
            return (row.get("fleet") or "", row["device"])
        if key == "online":
            return (not row["online"], row["device"])
        if key == "last_seen":
            return (-(row.get("last_seen") or 0.0), row["device"])
        if key == "health":
            return (_HEALTH_RANK.get(row.get("health") or "", 3), row["device"])
        if key == "op":
            op = row.get("operation") or {}
            return (-(op.get("ts") or 0.0), row["device"])
        return row["device"]

    return value


def select(
    rows: list[dict[str, Any]], fleet: str, status: str, sort: str, *, descending: bool
) -> list[dict[str, Any]]:
    chosen = [r for r in rows if matches(r, fleet, status)]
    return sorted(chosen, key=sort_key(sort if sort in SORT_KEYS else "device"), reverse=descending)


def table_row(row: dict[str, Any], now_s: float | None = None) -> dict[str, Any]:
    """What one line of the fleet table shows, as text."""
    now_s = time.time() if now_s is None else now_s
    models = []
    for slot, info in (row.get("active") or {}).items():
        loaded = (row.get("models") or {}).get(slot) or {}
        if info.get("error"):
            text = "load error: " + str(info["error"])
        elif info.get("manifest_version") is not None:
            text = f"v{info['manifest_version']} (release {info.get('release')})"
        else:
            text = "as shipped" + (f" ({loaded.get('backend')})" if loaded.get("backend") else "")
        models.append({"slot": slot, "text": text, "version": info.get("manifest_version")})
    health_doc = row.get("health_doc") or {}
    failing = [
        f"{name}: {(health_doc.get('components') or {}).get(name, {}).get('detail') or 'not ok'}"
        for name in row.get("health_failing") or []
    ]
    op = row.get("operation")
    op_text = ""
    if op:
        op_text = f"{op['op'].split('/')[0]} {op.get('status')}"
        if op.get("reason"):
            op_text += f" ({op['reason']})"
    seen = row.get("last_seen")
    return {
        "device": row["device"],
        "fleet": row.get("fleet") or "-",
        "online": row["online"],
        "last_seen": age(now_s - seen) if seen else "never",
        "profile": row.get("profile") or "-",
        "models": models,
        "health": row.get("health") or "-",
        "failing": failing,
        "op": op_text or "-",
        "op_failed": bool(op and op.get("status") == "failed"),
        "alarms": row.get("alarms") or [],
    }


def fleets(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({str(r["fleet"]) for r in rows if r.get("fleet")})
