"""Feeding a model slot: the newest frame of its cameras, prepared into a free input buffer.

Either thread of a slot may feed the model: ``prepost`` while the model runs, and
``infer`` itself when the model waits for the camera (a frame prepared on the thread
that invokes it needs no hand-off). One lock makes them take turns, so a camera's ring
slot is pinned by one of them at a time and no input buffer is written by both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agent.capture.base import Frame
from agent.pipeline.cpu import CpuMeter
from agent.pipeline.faults import SlotFaults
from agent.pipeline.handoff import Feed, FeedPicker, InputBuffers, Prepared, ewma, take_from
from agent.pipeline.model import LoadedModel


class Feeder:
    def __init__(
        self,
        feeds: list[Feed],
        inputs: InputBuffers,
        faults: SlotFaults,
        serving: Callable[[], LoadedModel | None],
    ) -> None:
        self._picker = FeedPicker(feeds)
        self._serving = serving  # the slot's model now (a swap may have happened)
        self._inputs = inputs
        self._faults = faults
        self._lock = threading.Lock()
        self.prep_est_s = 0.0  # running mean of one preprocess: is there time to refresh?

    def any_new(self) -> bool:
        """Whether a camera has a frame this slot has not taken (a lock-free hint)."""
        return self._picker.any_new()

    def newest(self) -> tuple[Feed, Frame] | None:
        """The newest frame of the next camera in turn (the one-thread layout's take)."""
        return self._picker.newest()

    def feed(
        self,
        loaded: LoadedModel,
        current: Callable[[], bool],
        cpu: CpuMeter,
        feed: Feed | None = None,
        *,
        blocking: bool = True,
    ) -> bool:
        """Take the newest frame (of ``feed``, else round robin), prepare and offer it.

        False when there was no new frame to take, or (``blocking=False``) when the
        other thread is feeding. ``current`` says whether the calling loop is still the
        slot's (a watchdog restart leaves what it prepared unused).
        """
        if not self._lock.acquire(blocking=blocking):
            return False
        try:
            picked = self._picker.newest() if feed is None else take_from(feed)
            if picked is None:
                return False
            try:
                prepared = self.prepare(picked, loaded, current)
                if prepared is not None:
                    prepared.prep_cpu_ns = cpu.take()
                    replaced = self._inputs.offer(prepared)
                    if replaced is not None:
                        replaced.feed.discarded += 1
            except Exception as exc:  # the thread must survive a bad frame
                picked[0].ring.release(picked[0].consumer)
                self._faults.failed(exc, "preprocess")
            return True
        finally:
            self._lock.release()

    def prepare(
        self, picked: tuple[Feed, Frame], loaded: LoadedModel, current: Callable[[], bool]
    ) -> Prepared | None:
        """Motion gate, then the frame into a free input buffer; its ring slot is released."""
        feed, frame = picked
        start = time.monotonic()
        if feed.motion is not None and not feed.motion.moved(frame.image):
            feed.ring.release(feed.consumer)
            feed.motion_skipped += 1
            return None
        # Re-read: a swap since the caller looked closes the old backend; its buffers
        # (the template comes from the backend) must not be asked for.
        loaded = self._serving() or loaded
        index, tensor = self._inputs.free_buffer(loaded)
        transform = loaded.preprocessor.prepare(frame.image, tensor)
        feed.ring.release(feed.consumer)  # the frame is in the tensor now; free its slot
        if not current():
            return None
        end = time.monotonic()
        self.prep_est_s = ewma(self.prep_est_s, end - start)
        return Prepared(feed, frame, loaded, index, tensor, transform, start, end)
