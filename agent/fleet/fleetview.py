"""What ``edge-fleet status`` shows per device, from its retained topics (pure functions).

Op states of different deployments each count their own ``status_version`` from 1, so
the latest op is chosen by the device's wall time ``ts`` (then ``status_version``).
The active version per slot is the newest successful model update of that slot.
"""

from __future__ import annotations

from typing import Any

MODEL_UPDATE = "model_update"


def _order(doc: dict[str, Any]) -> tuple[float, int]:
    try:
        return float(doc.get("ts") or 0.0), int(doc.get("status_version") or 0)
    except (TypeError, ValueError):
        return 0.0, 0


def latest_op(ops: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The newest op state (``"<op>/<id>"``, doc) across every op and deployment.

    A manifest for other devices, refused as ``not_targeted``, is no operation on this one:
    it is passed over while there is anything else.
    """
    if not ops:
        return None
    done = {k: v for k, v in ops.items() if v.get("reason") != "not_targeted"} or ops
    return max(done.items(), key=lambda kv: _order(kv[1]))


def active_versions(
    state_models: dict[str, Any], ops: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per slot: manifest version and release of the newest successful update, else none."""
    slots: dict[str, dict[str, Any]] = {str(s): {} for s in state_models}
    newest: dict[str, tuple[float, int]] = {}
    for name, doc in ops.items():
        if not name.startswith(MODEL_UPDATE + "/") or doc.get("status") != "successful":
            continue
        slot = doc.get("slot")
        if not isinstance(slot, str):
            continue
        if _order(doc) >= newest.get(slot, (-1.0, -1)):
            newest[slot] = _order(doc)
            slots[slot] = {
                "manifest_version": doc.get("manifest_version"),
                "release": doc.get("release"),
                "deployment_id": doc.get("deployment_id") or name.split("/", 1)[1],
            }
    for slot, info in state_models.items():
        if isinstance(info, dict) and info.get("error"):
            slots[str(slot)]["error"] = str(info["error"])
    return dict(sorted(slots.items()))


def last_seen(entry: dict[str, Any]) -> float | None:
    """The newest wall time any retained message of the device carries (None: none)."""
    stamps = [entry.get("state", {}).get("ts"), entry.get("health", {}).get("ts")]
    stamps += [doc.get("ts") for doc in entry.get("ops", {}).values()]
    found = [float(t) for t in stamps if isinstance(t, int | float)]
    return max(found) if found else None


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def device_row(device: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Everything known about one device (``--json``), with the chosen latest op."""
    state = entry.get("state", {})
    ops = entry.get("ops", {})
    health = entry.get("health", {})
    current = latest_op(ops)
    models = state.get("models") if isinstance(state.get("models"), dict) else {}
    return {
        "device": device,
        "fleet": state.get("fleet"),
        "online": bool(state.get("online", False)),
        "agent_version": state.get("agent_version"),
        "active": active_versions(models or {}, ops),
        "models": models,
        "health": health.get("status"),
        "health_failing": sorted(
            name
            for name, comp in (health.get("components") or {}).items()
            if isinstance(comp, dict) and comp.get("status") not in (None, "ok")
        ),
        "health_doc": health or None,
        "alarms": sorted(entry.get("alarms", {})),
        "last_seen": last_seen(entry),
        "operation": (
            {
                "op": current[0],
                **{k: current[1].get(k) for k in ("status", "reason", "ts", "status_version")},
                **({"shadow": current[1]["shadow"]} if current[1].get("shadow") else {}),
            }
            if current
            else None
        ),
        "ops": ops,
    }


def _models_text(active: dict[str, dict[str, Any]]) -> str:
    parts = []
    for slot, info in active.items():
        if info.get("error"):
            parts.append(f"{slot}:error")
        elif info.get("manifest_version") is not None:
            parts.append(f"{slot}:v{info['manifest_version']}")
        else:
            parts.append(f"{slot}:-")
    return " ".join(parts) or "-"


def _health_text(row: dict[str, Any]) -> str:
    status = row["health"] or "-"
    if row["health_failing"]:
        status += f"({','.join(row['health_failing'])})"
    return status


def _op_text(row: dict[str, Any], now_s: float) -> str:
    op = row["operation"]
    if op is None:
        return "-"
    text = f"{op['op']} {op['status']}"
    if op.get("reason"):
        text += f" ({op['reason']})"
    shadow = op.get("shadow")
    if isinstance(shadow, dict):  # the shadow trial's figures (issue 15)
        text += (
            f" [shadow {shadow.get('frames_compared')} frames, agreement "
            f"{shadow.get('agreement')}, rate change {shadow.get('rate_change')}]"
        )
    if isinstance(op.get("ts"), int | float):
        text += f" {age(now_s - float(op['ts']))}"
    return text


HEADER = ("DEVICE", "FLEET", "ONLINE", "MODELS", "HEALTH", "LAST OP")


def render_lines(rows: list[dict[str, Any]], now_s: float) -> list[str]:
    """One line per device; columns as wide as their widest cell, the last op never cut."""
    cells = [
        (
            r["device"],
            r["fleet"] or "-",
            "yes" if r["online"] else "no",
            _models_text(r["active"]),
            _health_text(r),
            _op_text(r, now_s) + (f"  alarms: {','.join(r['alarms'])}" if r["alarms"] else ""),
        )
        for r in rows
    ]
    table = [HEADER, *cells]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER) - 1)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in table
    ]
