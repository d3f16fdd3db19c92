"""The newest published snapshot of each device, for its page (raw JPEG, docs/mqtt.md).

Devices publish on ``<root>/d/<dev>/snapshot/<camera>`` (retained) when Home Assistant
discovery or ``telemetry.snapshot_interval_s`` is on; the boxes of fresh detections are
already drawn by the device. Only the newest image per device is kept, whatever its camera,
and everything is bounded: an image over ``max_image_bytes`` or not a JPEG is ignored, and
past ``max_total_bytes`` the images received longest ago are dropped (a broker full of large
retained images must not grow the console without limit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True, slots=True)
class Image:
    camera: str
    jpeg: bytes
    received_at: float
    seq: int  # changes with every new image: the page's cache key


class LatestImages:
    def __init__(
        self,
        root: str,
        *,
        max_image_bytes: int = 1024 * 1024,
        max_total_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.max_image_bytes = max_image_bytes
        self.max_total_bytes = max_total_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._images: dict[str, Image] = {}  # insertion order = order received
        self._total = 0
        self._seq = 0
        self.ignored = 0  # too large or not a JPEG
        self.evicted = 0  # dropped to stay within max_total_bytes

    def filter(self) -> str:
        return f"{self.root}/d/+/snapshot/+"

    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic[len(self.root) + 1 :].split("/")
        if len(parts) != 4 or parts[0] != "d" or parts[2] != "snapshot":
            return
        device, camera = parts[1], parts[3]
        with self._lock:
            if not payload:  # an empty retained message clears that camera's image
                current = self._images.get(device)
                if current is not None and current.camera == camera:
                    self._drop(device)
                return
            if len(payload) > self.max_image_bytes or not payload.startswith(JPEG_MAGIC):
                self.ignored += 1
                return
            self._drop(device)
            self._seq += 1
            self._images[device] = Image(camera, bytes(payload), self._clock(), self._seq)
            self._total += len(payload)
            while self._total > self.max_total_bytes:
                oldest = next(iter(self._images))
                self._drop(oldest)
                self.evicted += 1

    def _drop(self, device: str) -> None:
        old = self._images.pop(device, None)
        if old is not None:
            self._total -= len(old.jpeg)

    def get(self, device: str) -> Image | None:
        with self._lock:
            return self._images.get(device)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._total
