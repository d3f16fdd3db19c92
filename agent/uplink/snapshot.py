"""Size-bounded JPEG snapshots (pure): re-encode at lower quality, then downscale, until it fits."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import CommandError, Reason

QUALITIES = (85, 70, 50, 35, 20)
SCALES = (1.0, 0.75, 0.5, 0.35, 0.25, 0.125)
MIN_SIDE_PX = 16


@dataclass(frozen=True, slots=True)
class Snapshot:
    jpeg: bytes
    width: int
    height: int
    quality: int
    scale: float

    def to_result(self, camera: str) -> dict[str, Any]:
        return {
            "camera": camera,
            "content_type": "image/jpeg",
            "encoding": "base64",
            "bytes": len(self.jpeg),
            "width": self.width,
            "height": self.height,
            "quality": self.quality,
            "scale": self.scale,
            "jpeg_b64": base64.b64encode(self.jpeg).decode("ascii"),
        }


def encode_bounded(image: npt.NDArray[np.uint8], max_bytes: int, quality: int = 85) -> Snapshot:
    """The largest, best JPEG of ``image`` (BGR) within ``max_bytes``; CommandError(too_large)."""
    height, width = image.shape[:2]
    qualities = [quality, *(q for q in QUALITIES if q < quality)]
    smallest = 0
    for scale in SCALES:
        w, h = round(width * scale), round(height * scale)
        if min(w, h) < MIN_SIDE_PX and scale != SCALES[0]:
            break
        scaled = image if scale == 1.0 else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        for q in qualities:
            ok, buf = cv2.imencode(".jpg", scaled, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                raise CommandError(Reason.MALFORMED, "frame cannot be encoded as JPEG")
            smallest = len(buf)
            if len(buf) <= max_bytes:
                return Snapshot(buf.tobytes(), w, h, q, scale)
    raise CommandError(
        Reason.TOO_LARGE,
        f"no JPEG of the frame fits in {max_bytes} bytes (smallest {smallest})",
        max_bytes=max_bytes,
    )
