"""What the console knows: the fleet's retained topics and an hour of stats, fed by MQTT.

Messages arrive on paho's thread; pages read copies under one lock. Everything is bounded:
stats history per device by age (``window_s``) and count (``max_points``), devices by
``max_devices`` (a broker full of junk topics must not grow the console without limit).
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.fleet.console.series import chart_data, sample_of
from agent.fleet.fleetview import device_row

# Retained device topics the table is built from (as ``edge-fleet status`` reads them), and
# the live stats stream the charts are drawn from.
DEVICE_SUFFIXES = ("state", "health", "a/+", "op/+/+", "m/stats")
HOUR_S = 3600.0


@dataclass
class DeviceHistory:
    points: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    last_stats: dict[str, Any] | None = None
    last_stats_at: float | None = None


class FleetState:
    def __init__(
        self,
        root: str,
        *,
        window_s: float = HOUR_S,
        max_points: int = 1200,
        max_devices: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.window_s = window_s
        self.max_points = max_points
        self.max_devices = max_devices
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: dict[str, dict[str, Any]] = {}
        self._history: dict[str, DeviceHistory] = {}
        self.ignored = 0  # messages that were not JSON objects or came past max_devices

    def filters(self) -> list[str]:
        return [f"{self.root}/d/+/{suffix}" for suffix in DEVICE_SUFFIXES]

    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic[len(self.root) + 1 :].split("/")
        if len(parts) < 3 or parts[0] != "d":
            return
        device, kind = parts[1], parts[2]
        doc: Any = None
        if payload:
            try:
                doc = json.loads(payload)
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                self.ignored += 1
                return
        with self._lock:
            entry = self._devices.get(device)
            if entry is None:
                if doc is None or len(self._devices) >= self.max_devices:
                    self.ignored += doc is not None
                    return
                entry = self._devices[device] = {"alarms": {}, "ops": {}}
            if kind in ("state", "health"):
                if doc is None:
                    entry.pop(kind, None)
                else:
                    entry[kind] = doc
            elif kind == "a" and len(parts) >= 4:
                self._put(entry["alarms"], parts[3], doc)
            elif kind == "op" and len(parts) >= 5:
                self._put(entry["ops"], f"{parts[3]}/{parts[4]}", doc)
            elif kind == "m" and parts[3:] == ["stats"] and doc is not None:
                self._add_stats(device, doc)

    @staticmethod
    def _put(table: dict[str, Any], key: str, doc: dict[str, Any] | None) -> None:
        # An empty retained message clears an alarm or an op state.
        if doc is None:
            table.pop(key, None)
        else:
            table[key] = doc

    def _add_stats(self, device: str, doc: dict[str, Any]) -> None:
        now = self._clock()
        ts = doc.get("ts")
        # The device's own time places a backlog sent after an outage where it belongs.
        at = float(ts) if isinstance(ts, int | float) and abs(now - ts) < 30 * 86400 else now
        history = self._history.setdefault(device, DeviceHistory())
        bisect.insort(history.points, (at, sample_of(doc)), key=lambda p: p[0])
        cutoff = now - self.window_s
        drop = bisect.bisect_left(history.points, cutoff, key=lambda p: p[0])
        drop = max(drop, len(history.points) - self.max_points)
        if drop > 0:
            del history.points[:drop]
        history.last_stats, history.last_stats_at = doc, now

    # Readers: copies, so a page renders without holding the lock.

    def devices(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            copy: dict[str, dict[str, Any]] = json.loads(json.dumps(self._devices))
            return copy

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        stats_seen = self.stats_seen()
        for device, entry in sorted(self.devices().items()):
            row = device_row(device, entry)
            row["profile"] = entry.get("state", {}).get("profile")  # board profile, in the birth
            if device in stats_seen:  # live stats count as seen too (retained topics age)
                row["last_seen"] = max(row["last_seen"] or 0.0, stats_seen[device])
            rows.append(row)
        return rows

    def stats_seen(self) -> dict[str, float]:
        with self._lock:
            return {d: h.last_stats_at for d, h in self._history.items() if h.last_stats_at}

    def charts(self, device: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            history = self._history.get(device)
            points = list(history.points) if history else []
        return chart_data(points)

    def last_stats(self, device: str) -> dict[str, Any] | None:
        with self._lock:
            history = self._history.get(device)
            return None if history is None else history.last_stats

    def point_count(self, device: str) -> int:
        with self._lock:
            history = self._history.get(device)
            return 0 if history is None else len(history.points)
