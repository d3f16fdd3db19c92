"""Process and board readings: RSS, CPU, temperatures, throttling (Linux /proc and sysfs)."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    # Peak, not current: better than nothing where /proc is missing.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def read_temperatures_c(paths: list[str]) -> dict[str, float]:
    """sysfs millidegree files → {zone: °C}; unreadable zones are left out."""
    temps: dict[str, float] = {}
    for raw in paths:
        path = Path(raw)
        try:
            value = int(path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue
        name = path.parent.name if path.name == "temp" else path.name
        temps[name] = round(value / 1000.0, 1)
    return temps


def read_throttle(path: str) -> int | None:
    """The board's throttle bit mask (hex or decimal text, e.g. ``throttled=0x50005``)."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except OSError:
        return None
    text = text.rsplit("=", 1)[-1]
    try:
        return int(text, 0)
    except ValueError:
        return None


@dataclass
class CpuMeter:
    """CPU use of this process in percent of one core since the previous call."""

    last_cpu_s: float = field(default_factory=time.process_time)
    last_wall_s: float = field(default_factory=time.monotonic)

    def percent(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        d_wall = wall - self.last_wall_s
        value = 100.0 * (cpu - self.last_cpu_s) / d_wall if d_wall > 0 else 0.0
        self.last_cpu_s, self.last_wall_s = cpu, wall
        return round(value, 1)


def process_info(meter: CpuMeter, thermal_paths: list[str], throttle_path: str) -> dict[str, Any]:
    temps = read_temperatures_c(thermal_paths)
    return {
        "pid": os.getpid(),
        "rss_mb": rss_mb(),
        "cpu_percent": meter.percent(),
        "temperature_c": temps,
        "max_temperature_c": max(temps.values()) if temps else None,
        "throttled": read_throttle(throttle_path),
    }
