"""Latest-frame-wins ring of preallocated frames between one capture thread and its consumers.

The writer copies each decoded image into a free slot and publishes it as the newest;
a consumer takes the newest frame it has not seen, never the same one twice, and the
slot it holds is not reused until it takes the next one. Frames nobody took before a
newer one arrived are counted as overwritten, never queued.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from agent.capture.base import Frame
from agent.stats import RateWindow


class FrameRing:
    def __init__(self, camera: str, slots: int = 3, consumers: int = 1) -> None:
        # Each consumer pins one slot and the writer needs the newest plus one to write.
        self._n_slots = max(slots, consumers + 2)
        self._camera = camera
        self._slots: list[npt.NDArray[np.uint8]] = []
        self._meta: list[tuple[int, float, float]] = [(0, 0.0, 0.0)] * self._n_slots
        self._latest = -1  # slot index of the newest published frame
        self._seq = 0
        self._taken_seq = [0] * consumers  # last frame seq each consumer took
        self._pinned = [-1] * consumers  # slot each consumer is reading
        self._cond = threading.Condition()
        self._listeners: list[Callable[[], None]] = []
        self.overwritten = [0] * consumers
        self.dropped = [RateWindow() for _ in range(consumers)]
        self.published = 0

    @property
    def camera(self) -> str:
        return self._camera

    def add_listener(self, wake: Callable[[], None]) -> None:
        """Called (from the capture thread) after every publish; must be cheap."""
        self._listeners.append(wake)

    def _ensure_slots(self, shape: tuple[int, ...]) -> None:
        if not self._slots or self._slots[0].shape != shape:
            # Only at the first frame or on a resolution change; consumers then see new arrays.
            self._slots = [np.empty(shape, np.uint8) for _ in range(self._n_slots)]

    def _free_slot(self) -> int:
        busy = {self._latest, *self._pinned}
        for index in range(self._n_slots):
            if index not in busy:
                return index
        raise AssertionError("ring has no free slot")  # impossible: n_slots > consumers + 1

    def publish(self, image: npt.NDArray[np.uint8], captured_mono_s: float | None = None) -> int:
        """Copy ``image`` into a free slot and make it the newest frame; returns its seq."""
        mono = time.monotonic() if captured_mono_s is None else captured_mono_s
        wall = time.time()
        with self._cond:
            if not self._slots or self._slots[0].shape != image.shape:
                self._ensure_slots(image.shape)
                self._pinned = [-1] * len(self._pinned)
            slot = self._free_slot()
        # The copy runs outside the lock: no consumer can pin a slot that is not the newest.
        np.copyto(self._slots[slot], image)
        with self._cond:
            if self._latest >= 0:
                previous_seq = self._meta[self._latest][0]
                for consumer, taken in enumerate(self._taken_seq):
                    if taken < previous_seq:
                        self.overwritten[consumer] += 1
                        self.dropped[consumer].add(mono)
            self._seq += 1
            self._meta[slot] = (self._seq, mono, wall)
            self._latest = slot
            self.published += 1
            self._cond.notify_all()
        for wake in self._listeners:
            wake()
        return self._seq

    def has_new(self, consumer: int = 0) -> bool:
        """Whether a frame this consumer has not taken is published. Without the lock it
        is a hint (a publish right after it still calls the listeners); ``take`` asks it
        under the lock."""
        latest = self._latest
        return latest >= 0 and self._meta[latest][0] > self._taken_seq[consumer]

    def take(self, consumer: int = 0, timeout_s: float = 0.0) -> Frame | None:
        """The newest frame this consumer has not taken yet, waiting up to ``timeout_s``.

        The returned image stays valid until this consumer's next ``take`` or ``release``.
        """
        deadline: float | None = None  # read the clock only when there is nothing new
        with self._cond:
            while not self.has_new(consumer):
                if deadline is None:
                    deadline = time.monotonic() + timeout_s
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            slot = self._latest
            seq, mono, wall = self._meta[slot]
            self._taken_seq[consumer] = seq
            self._pinned[consumer] = slot
            return Frame(self._camera, seq, mono, wall, self._slots[slot])

    def latest_copy(self) -> npt.NDArray[np.uint8] | None:
        """A copy of the newest frame (snapshots); None before the first one.

        Copied under the lock: the writer never writes the newest slot, and cannot make
        another slot the newest until the copy is done.
        """
        with self._cond:
            if self._latest < 0:
                return None
            return self._slots[self._latest].copy()

    def release(self, consumer: int = 0) -> None:
        with self._cond:
            self._pinned[consumer] = -1
