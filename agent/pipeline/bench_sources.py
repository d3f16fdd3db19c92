"""The benchmark's source: frames decoded once, replayed faster than the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.capture import open_source
from agent.capture.base import Pacer
from agent.config.board import BoardConfig
from agent.config.camera import CameraConfig

REPLAY_FRAMES = 8
REPLAY_STRIDE = 26  # 8 frames across the 210-frame sample clip: faces and no faces


class ReplaySource:
    """Frames decoded once, replayed at a fixed rate (a camera faster than the model)."""

    def __init__(self, frames: list[npt.NDArray[np.uint8]], fps: float, _camera: object) -> None:
        self._frames = frames
        self._pacer = Pacer(1.0 / fps)
        self._index = 0

    @property
    def nominal_fps(self) -> float:
        return 1.0 / self._pacer.period_s

    @property
    def ended(self) -> bool:
        return False

    def read(self) -> npt.NDArray[np.uint8] | None:
        self._pacer.wait()
        self._index += 1
        return self._frames[self._index % len(self._frames)]

    def release(self) -> None:
        self._index = 0


def load_frames(clip: Path, count: int = REPLAY_FRAMES) -> list[npt.NDArray[np.uint8]]:
    """``count`` frames spread over the clip, decoded once."""
    source = open_source(CameraConfig(source=f"file:{clip}"), BoardConfig(), paced=False)
    frames: list[npt.NDArray[np.uint8]] = []
    try:
        index = 0
        while (image := source.read()) is not None:
            if index % REPLAY_STRIDE == 0 and len(frames) < count:
                frames.append(image)
            index += 1
    finally:
        source.release()
    return frames
