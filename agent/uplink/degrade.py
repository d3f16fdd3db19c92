"""Degradation of detections to per-label counts per minute (pure functions)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

# (minute, camera, model, label) -> count; label "" counts events.
CountKey = tuple[int, str, str, str]
EVENTS_LABEL = ""


def fold_payload(payload: bytes, fallback_ts: float) -> Counter[CountKey]:
    """Counts carried by one detection payload, or by a counts summary folded back."""
    counts: Counter[CountKey] = Counter()
    try:
        doc = json.loads(payload)
    except ValueError:
        return counts
    if not isinstance(doc, dict):
        return counts
    camera = str(doc.get("camera", ""))
    model = str(doc.get("model", ""))
    if "counts" in doc and "minute_ts" in doc:
        minute = int(float(doc["minute_ts"]) // 60)
        counts[(minute, camera, model, EVENTS_LABEL)] += int(doc.get("events", 0))
        for label, n in dict(doc["counts"]).items():
            counts[(minute, camera, model, str(label))] += int(n)
        return counts
    ts = doc.get("ts", fallback_ts)
    minute = int(float(ts if isinstance(ts, (int, float)) else fallback_ts) // 60)
    counts[(minute, camera, model, EVENTS_LABEL)] += 1
    for det in doc.get("detections", []) or []:
        if isinstance(det, dict):
            counts[(minute, camera, model, str(det.get("label", "")))] += 1
    return counts


CountRow = tuple[int, str, str, str, int]


def summaries(rows: list[CountRow]) -> list[dict[str, Any]]:
    """Group (minute, camera, model, label, n) rows into one summary per minute/camera/model."""
    grouped: dict[tuple[int, str, str], dict[str, Any]] = {}
    for row in rows:
        minute, camera, model, label, n = row
        doc = grouped.setdefault(
            (minute, camera, model),
            {
                "minute_ts": minute * 60,
                "camera": camera,
                "model": model,
                "events": 0,
                "counts": {},
                "degraded": True,
            },
        )
        if label == EVENTS_LABEL:
            doc["events"] += n
        else:
            doc["counts"][label] = doc["counts"].get(label, 0) + n
    return [grouped[k] for k in sorted(grouped)]
