"""Run one probe on a daemon thread with a deadline: a wedged driver must not hang diag."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_bounded(name: str, work: Callable[[], T], timeout_s: float) -> T | BaseException | None:
    """``work()``'s result, the exception it raised, or None when it did not return in time.

    The thread is a daemon: one still blocked in a driver call is abandoned, not joined.
    """
    outcome: list[T | BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # carried to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join(timeout_s)
    return outcome[0] if outcome else None
