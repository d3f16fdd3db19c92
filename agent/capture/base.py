"""Frames and the camera source interface."""

from __future__ import annotations

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
