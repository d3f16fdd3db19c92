"""Frames and the camera source interface."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(slots=True)
class Frame:
    """A captured image. ``image`` is BGR uint8 HxWx3 (OpenCV's order)."""

    camera: str
    seq: int  # per-camera capture counter
    captured_mono_s: float  # time.monotonic() when the frame left the source
    captured_wall_s: float
    image: npt.NDArray[np.uint8]


class Source(Protocol):
    """One opened camera source. Implementations wrap OpenCV or a fake."""

    def read(self) -> npt.NDArray[np.uint8] | None:
        """Block for the next frame; None at the end of a non-looping file or on a read failure."""
        ...

    @property
    def nominal_fps(self) -> float:
        """Rate the source says it delivers (0 when unknown)."""
        ...

    @property
    def ended(self) -> bool:
        """True once a finite source (file or directory without loop) has delivered everything."""
        ...

    def release(self) -> None: ...


class Pacer:
    """Holds reads to at most one per ``period_s`` (0: no pacing).

    It does not catch up after a slow consumer: the next read is due one period after
    the later of the schedule and now.
    """

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._next_due_s = 0.0

    def wait(self) -> None:
        if not self.period_s:
            return
        now = time.monotonic()
        if self._next_due_s > now:
            time.sleep(self._next_due_s - now)
        self._next_due_s = max(self._next_due_s, now) + self.period_s
