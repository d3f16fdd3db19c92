"""Clock protocol so freshness, TTL and backoff logic can be driven by a fake clock in tests."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def wall_s(self) -> float:
        """Seconds since the epoch (may jump; used for timestamps and expiry)."""
        ...

    def monotonic_s(self) -> float:
        """Seconds from an arbitrary origin that never goes back (used for durations)."""
        ...


class SystemClock:
    def wall_s(self) -> float:
        return time.time()

    def monotonic_s(self) -> float:
        return time.monotonic()
