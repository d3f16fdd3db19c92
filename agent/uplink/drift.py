"""On-device drift signals: per model, a confidence histogram and detections per event per
label over a rolling window, compared with a baseline window (the first full window).

``observe`` is cheap (called from the inference thread through the sink); ``evaluate``
runs in the telemetry loop and returns the models whose window shifted past the limits.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from agent.events.types import DetectionEvent

BINS = 10


def histogram(scores: list[float]) -> list[float]:
    """Normalised histogram of scores in [0, 1] over ``BINS`` equal bins."""
    counts = [0] * BINS
    for s in scores:
        counts[min(BINS - 1, max(0, int(s * BINS)))] += 1
    total = sum(counts)
    return [c / total for c in counts] if total else [0.0] * BINS


def total_variation(a: list[float], b: list[float]) -> float:
    return 0.5 * sum(abs(x - y) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True, slots=True)
class Window:
    events: int
    scores: tuple[float, ...]
    labels: Counter[str]

    def rate(self, label: str) -> float:
        return self.labels[label] / self.events if self.events else 0.0


def compare(
    baseline: Window, current: Window, hist_limit: float, rate_limit: float
) -> dict[str, Any]:
    """Pure verdict: distances and whether either passes its limit."""
    tv = total_variation(histogram(list(baseline.scores)), histogram(list(current.scores)))
    rates: dict[str, float] = {}
    for label in set(baseline.labels) | set(current.labels):
        base = baseline.rate(label)
        now = current.rate(label)
        rates[label] = abs(now - base) / base if base > 0 else (1.0 if now > 0 else 0.0)
    worst_rate = max(rates.values(), default=0.0)
    return {
        "histogram_distance": round(tv, 3),
        "rate_change": {k: round(v, 3) for k, v in sorted(rates.items())},
        "drifted": tv > hist_limit or worst_rate > rate_limit,
    }


@dataclass
class _ModelDrift:
    window_events: int
    events: deque[tuple[tuple[float, ...], tuple[str, ...]]] = field(default_factory=deque)
    baseline: Window | None = None
    seen: int = 0

    def add(self, scores: tuple[float, ...], labels: tuple[str, ...]) -> None:
        self.events.append((scores, labels))
        self.seen += 1
        if len(self.events) > self.window_events:
            self.events.popleft()
        if self.baseline is None and len(self.events) == self.window_events:
            self.baseline = self.window()

    def window(self) -> Window:
        scores = tuple(s for sc, _ in self.events for s in sc)
        labels: Counter[str] = Counter(lab for _, labs in self.events for lab in labs)
        return Window(len(self.events), scores, labels)


class DriftMonitor:
    def __init__(self, window_events: int, hist_limit: float, rate_limit: float) -> None:
        self.window_events = window_events
        self.hist_limit = hist_limit
        self.rate_limit = rate_limit
        self._lock = threading.Lock()
        self._models: dict[str, _ModelDrift] = {}

    def observe(self, event: DetectionEvent) -> None:
        scores = tuple(d.score for d in event.detections)
        labels = tuple(d.label for d in event.detections)
        with self._lock:
            model = self._models.setdefault(event.model, _ModelDrift(self.window_events))
            model.add(scores, labels)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        """Per model with a baseline and a full new window since: the comparison."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            ready = {
                name: (m.baseline, m.window())
                for name, m in self._models.items()
                if m.baseline is not None and m.seen >= 2 * self.window_events
            }
        for name, (baseline, current) in ready.items():
            out[name] = compare(baseline, current, self.hist_limit, self.rate_limit)
        return out
