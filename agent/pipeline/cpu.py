"""CPU time a pipeline thread spends on frames, outside the invoke call.

Wall-clock stage times grow with the machine's load (a preempted thread's clock runs
on); the CPU time a thread itself consumed does not, so it is the figure to compare
across runs. Each thread keeps one ``CpuMeter`` (``time.thread_time_ns`` reads the
calling thread's clock, so a meter must be created and read in the thread it measures)
and charges everything it spent since its last frame (wake-ups, lock hand-offs, frames
replaced before use) to the frame it hands on next.
"""

from __future__ import annotations

import time


class CpuMeter:
    """CPU nanoseconds of the calling thread since the last ``take``, minus what was excluded."""

    __slots__ = ("_excluded_ns", "_mark_ns")

    def __init__(self) -> None:
        self._mark_ns = time.thread_time_ns()
        self._excluded_ns = 0

    def exclude(self, ns: int) -> None:
        """Leave ``ns`` out of the next ``take`` (the invoke's own CPU time)."""
        self._excluded_ns += ns

    def take(self) -> int:
        now = time.thread_time_ns()
        spent = now - self._mark_ns - self._excluded_ns
        self._mark_ns = now
        self._excluded_ns = 0
        return max(0, spent)
