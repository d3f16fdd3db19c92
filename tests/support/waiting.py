"""Polling for a condition in tests that drive real threads, brokers and processes."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], object], timeout_s: float = 5.0, interval_s: float = 0.01
) -> bool:
    """True as soon as ``predicate()`` is truthy; after ``timeout_s``, one last check."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
