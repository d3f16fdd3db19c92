"""Cheap motion gate: frame differencing on a downscaled luma plane, to skip still scenes."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

GATE_WIDTH = 64  # downscaled width; height follows the frame's aspect ratio
PIXEL_DELTA = 20  # luma change (0..255) that counts a pixel as changed


class MotionGate:
    def __init__(self, threshold: float, width: int = GATE_WIDTH) -> None:
        self._threshold = threshold
        self._width = width
        self._previous: npt.NDArray[np.uint8] | None = None
        self.last_fraction = 0.0

    def moved(self, image: npt.NDArray[np.uint8]) -> bool:
        """True when the changed-pixel fraction since the last call reaches the threshold.

        The first frame, and a change of resolution, count as motion.
        """
        h, w = image.shape[:2]
        size = (self._width, max(1, round(h * self._width / w)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        luma = cast("npt.NDArray[np.uint8]", cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        previous, self._previous = self._previous, luma
        if previous is None or previous.shape != luma.shape:
            self.last_fraction = 1.0
            return True
        changed = cv2.absdiff(luma, previous) > PIXEL_DELTA
        self.last_fraction = float(np.count_nonzero(changed)) / changed.size
        return self.last_fraction >= self._threshold
