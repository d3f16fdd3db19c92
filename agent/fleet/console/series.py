"""Chart samples from ``m/stats`` documents (pure functions).

One sample per stats message, a flat ``{series name: number}``: a stats document is a few
KiB, a sample a few dozen bytes, so an hour of history per device stays small.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Chart name -> (title, unit, series prefixes it draws); the order is the page's order.
CHARTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "fps": ("Frames per second", "fps", ("fps.",)),
    "latency": ("Latency p50: end to end and per stage", "ms", ("latency_ms.", "stage_ms.")),
    "inference": ("Inference p50", "ms", ("inference_ms.",)),
    "cpu": ("CPU", "%", ("cpu_percent",)),
    "rss": ("Resident memory", "MiB", ("rss_mb",)),
    "temperature": ("Temperature", "°C", ("temperature_c", "throttled")),
    "outbox": ("Outbox depth and drops", "messages", ("outbox_depth", "outbox_dropped")),
    "drift": ("Drift: confidence histogram distance", "TV distance", ("drift.",)),
}
STAGES = ("preprocess_ms", "postprocess_ms", "handoff_ms", "capture_age_ms")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _total(value: Any) -> float:
    """Sum of the numbers in a (nested) counter document such as ``outbox.dropped``."""
    if isinstance(value, dict):
        return sum(_total(v) for v in value.values())
    number = _number(value)
    return number if number is not None else 0.0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(doc: Any) -> Iterable[tuple[str, dict[str, Any]]]:
    if not isinstance(doc, dict):
        return ()
    return ((str(k), v) for k, v in doc.items() if isinstance(v, dict))


def sample_of(stats: dict[str, Any]) -> dict[str, float]:
    """The numbers the charts draw, from one stats document (missing parts are left out)."""
    out: dict[str, float] = {}
    for camera, doc in _items(stats.get("cameras")):
        for key in ("capture_fps", "inferred_fps", "dropped_fps"):
            if (n := _number(doc.get(key))) is not None:
                out[f"fps.{camera}.{key.removesuffix('_fps')}"] = n
    for slot, doc in _items(stats.get("models")):
        for key, prefix in (("inference_ms", "inference_ms"), ("e2e_ms", "latency_ms")):
            part = doc.get(key)
            if isinstance(part, dict) and (n := _number(part.get("p50"))) is not None:
                out[f"{prefix}.{slot}"] = n
        for stage in STAGES:
            part = doc.get(stage)
            if isinstance(part, dict) and (n := _number(part.get("p50"))) is not None:
                out[f"stage_ms.{slot}.{stage.removesuffix('_ms')}"] = n
    for slot, doc in _items(stats.get("drift")):
        if (n := _number(doc.get("histogram_distance"))) is not None:
            out[f"drift.{slot}"] = n
    process = _dict(stats.get("process"))
    for key in ("cpu_percent", "rss_mb"):
        if (n := _number(process.get(key))) is not None:
            out[key] = n
    if (n := _number(process.get("max_temperature_c"))) is not None:
        out["temperature_c"] = n
    if (n := _number(process.get("throttled"))) is not None:
        out["throttled"] = n
    outbox = _dict(stats.get("outbox"))
    if (n := _number(outbox.get("depth"))) is not None:
        out["outbox_depth"] = n
    if "dropped" in outbox:
        out["outbox_dropped"] = _total(outbox.get("dropped"))
    return out


def chart_data(
    points: list[tuple[float, dict[str, float]]],
) -> dict[str, dict[str, Any]]:
    """Per chart: ``{"title", "unit", "series": [names], "data": [[ts...], [values]...]}``.

    The ``data`` layout is uPlot's (x values first, one array per series, null for gaps).
    """
    names = sorted({name for _ts, sample in points for name in sample})
    charts: dict[str, dict[str, Any]] = {}
    for chart, (title, unit, prefixes) in CHARTS.items():
        series = [n for n in names if any(n == p or n.startswith(p) for p in prefixes)]
        if not series:
            continue
        data: list[list[float | None]] = [[ts for ts, _s in points]]
        data += [[sample.get(name) for _ts, sample in points] for name in series]
        charts[chart] = {"title": title, "unit": unit, "series": series, "data": data}
    return charts
