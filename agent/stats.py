"""Sliding-window figures for the stats: event rates, latency percentiles, hourly counters.

All are fed from one thread and read from another; each guards its deque with a lock
because a reader iterating a deque that is appended to raises RuntimeError.
"""

from __future__ import annotations

import threading
import time
from collections import deque

RATE_WINDOW_S = 10.0
SAMPLES_KEPT = 512
HOUR_S = 3600.0


class RateWindow:
    """Events per second over the last ``window_s`` (monotonic timestamps)."""

    def __init__(self, window_s: float = RATE_WINDOW_S, max_events: int = 4096) -> None:
        self._window_s = window_s
        self._stamps: deque[float] = deque(maxlen=max_events)
        self._lock = threading.Lock()
        self.total = 0

    def add(self, now_s: float | None = None, count: int = 1) -> None:
        stamp = time.monotonic() if now_s is None else now_s
        with self._lock:
            for _ in range(count):
                self._stamps.append(stamp)
            self.total += count

    def rate(self, now_s: float | None = None) -> float:
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            while self._stamps and self._stamps[0] < now - self._window_s:
                self._stamps.popleft()
            if not self._stamps:
                return 0.0
            # A full deque covers less than the window: divide by the span it covers.
            span = self._window_s
            if len(self._stamps) == self._stamps.maxlen:
                span = max(now - self._stamps[0], 1e-6)
            return len(self._stamps) / span


class SampleWindow:
    """The last ``size`` samples (e.g. milliseconds) with percentiles on demand."""

    def __init__(self, size: int = SAMPLES_KEPT) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._samples.append(value)

    def values(self) -> list[float]:
        with self._lock:
            return list(self._samples)

    def summary(self) -> dict[str, float]:
        return summarise(self.values())


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[rank]


def summarise(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    return {
        "p50": round(percentile(ordered, 0.50), 3),
        "p95": round(percentile(ordered, 0.95), 3),
        "mean": round(mean, 3),
        "n": float(len(ordered)),
    }


class HourCounter:
    """How many times something happened in the last hour (reconnects, stalls, restarts)."""

    def __init__(self, window_s: float = HOUR_S) -> None:
        self._window_s = window_s
        self._stamps: deque[float] = deque(maxlen=10_000)
        self._lock = threading.Lock()
        self.total = 0

    def add(self, now_s: float | None = None) -> None:
        with self._lock:
            self._stamps.append(time.monotonic() if now_s is None else now_s)
            self.total += 1

    def count(self, now_s: float | None = None) -> int:
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            while self._stamps and self._stamps[0] < now - self._window_s:
                self._stamps.popleft()
            return len(self._stamps)
