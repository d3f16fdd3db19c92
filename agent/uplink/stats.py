"""The periodic ``m/stats`` document, assembled from the pipeline, the process and the outbox."""

from __future__ import annotations

from typing import Any


def stats_document(
    *,
    ts: float,
    uptime_s: float,
    pipeline: dict[str, Any],
    process: dict[str, Any],
    outbox: dict[str, Any],
    link: dict[str, Any],
    drift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ts": round(ts, 3),
        "uptime_s": round(uptime_s, 1),
        **pipeline,
        "process": process,
        "outbox": {
            "depth": outbox.get("depth", 0),
            "bytes": outbox.get("bytes", 0),
            "dropped": outbox.get("dropped", {}),
            "degraded": outbox.get("degraded", 0),
            # Folded detections whose counts summary has not been queued yet.
            "pending_counts": outbox.get("pending_counts", 0),
            "max_bytes": outbox.get("max_bytes", 0),
        },
        "link": link,
    }
    if drift:
        doc["drift"] = drift
    return doc
