"""Hand-offs between the two threads of a model slot: prepost ⇄ infer.

``InputBuffers`` holds the model input three times: the buffer an invoke may be
reading, the one ready for the next invoke, and one the prepost thread writes.
The prepost thread prepares a frame as soon as nothing is ready, so the model never
waits for it; while the ready frame waits, a newer frame of the same camera replaces it
if there is time to prepare it before the model is expected to be free
(``worth_refreshing``). The model gets the newest frame that could be made ready in
time, without a timer guessing when to start: a late wake-up costs freshness (the older
ready frame is used), never throughput. A buffer is never written while an invoke reads it.

``PostQueue`` carries outputs back to the prepost thread: small, bounded, and a
full queue drops the oldest item and counts it, so the inference thread never blocks.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

from agent.capture.ring import FrameRing
from agent.events.filters import Debouncer
from agent.events.motion import MotionGate
from agent.stats import RateWindow, summarise

if TYPE_CHECKING:
    from agent.capture.base import Frame
    from agent.inference.preprocess import Transform
    from agent.pipeline.model import LoadedModel

POST_QUEUE_DEPTH = 4
INPUT_BUFFERS = 3  # invoking, ready, being written
# A refresh must be ready this much before the model is expected to be free: the
# preprocess estimate times REFRESH_MARGIN, plus REFRESH_MIN_S for wake-up jitter.
REFRESH_MARGIN = 1.0
REFRESH_MIN_S = 0.00005
# A ready frame younger than this when the model takes it is not replaced: a refresh could
# gain less than this much freshness, a fraction of any camera's frame period, for a
# second preprocess. A fast model fed by a faster source would otherwise prepare nearly
# every frame twice.
REFRESH_MIN_AGE_S = 0.005
EWMA_WEIGHT = 0.1


def worth_refreshing(
    now_s: float,
    invoke_start_s: float,
    invoke_est_s: float,
    prep_est_s: float,
    ready_captured_s: float,
) -> bool:
    """Whether to replace the ready frame with a newer one before the running invoke ends.

    Yes when a newer frame can be prepared before the model is expected to be free and
    the ready frame would by then be at least ``REFRESH_MIN_AGE_S`` old. Without
    estimates yet (the first frames) the answer is no: the ready frame is used.
    """
    if invoke_est_s <= 0.0 or prep_est_s <= 0.0:
        return False
    free_at_s = invoke_start_s + invoke_est_s
    if free_at_s - ready_captured_s < REFRESH_MIN_AGE_S:
        return False
    return free_at_s - now_s > prep_est_s * REFRESH_MARGIN + REFRESH_MIN_S


def ewma(previous: float, sample: float) -> float:
    return sample if previous <= 0.0 else previous + EWMA_WEIGHT * (sample - previous)


@dataclass(slots=True)
class Feed:
    """One camera as seen by one model slot."""

    ring: FrameRing
    consumer: int
    debounce: Debouncer
    motion: MotionGate | None
    inferred: RateWindow = field(default_factory=RateWindow)
    motion_skipped: int = 0
    discarded: int = 0  # taken but never fully processed (post queue full, model swap)


def take_from(feed: Feed) -> tuple[Feed, Frame] | None:
    """The newest frame of ``feed`` this slot has not taken yet (pinned until released)."""
    frame = feed.ring.take(feed.consumer)
    return None if frame is None else (feed, frame)


class FeedPicker:
    """The cameras of one slot taken in turn: the next take starts after the last one used."""

    def __init__(self, feeds: list[Feed]) -> None:
        self._feeds = feeds
        self._next = 0

    def any_new(self) -> bool:
        """Whether any camera has a frame this slot has not taken (a lock-free hint)."""
        return any(feed.ring.has_new(feed.consumer) for feed in self._feeds)

    def newest(self) -> tuple[Feed, Frame] | None:
        count = len(self._feeds)
        for i in range(count):
            picked = take_from(self._feeds[(self._next + i) % count])
            if picked is not None:
                self._next = (self._next + i + 1) % count
                return picked
        return None


class FrameTimes(NamedTuple):
    """What one frame's stages recorded: monotonic seconds and thread CPU nanoseconds."""

    captured_s: float
    prep_start_s: float
    prep_end_s: float
    invoke_start_s: float
    invoke_end_s: float
    post_start_s: float
    post_end_s: float
    prep_cpu_ns: int  # CPU preparing the frame (and frames it replaced)
    infer_cpu_ns: int  # the inference thread's CPU outside invoke
    post_cpu_ns: int
    invoke_cpu_ns: int  # the invoke itself, calling thread only


class TimingView:
    """One figure (milliseconds or microseconds) of every recorded frame, worked out when read.

    The frame path only appends a record; the arithmetic is done by the rare reader
    (health, bench), not ~1,000 times a second.
    """

    __slots__ = ("_figure", "_records")

    def __init__(self, records: deque[FrameTimes], figure: Callable[[FrameTimes], float]) -> None:
        self._records = records
        self._figure = figure

    def values(self) -> list[float]:
        # list() of a deque is one C call: no append can interleave with it under the GIL.
        return [self._figure(r) for r in list(self._records)]

    def summary(self) -> dict[str, float]:
        return summarise(self.values())


def _handoff_ms(r: FrameTimes) -> float:
    # Waiting between stages: prepared → invoke start, plus invoke end → decode start.
    return ((r.invoke_start_s - r.prep_end_s) + (r.post_start_s - r.invoke_end_s)) * 1000.0


class Timings:
    """Per-stage sliding windows of one model slot: one record per frame, figures on demand.

    CPU figures (microseconds) are the time the slot's own threads spent on the frame
    outside invoke: load-independent, unlike the wall-clock milliseconds.
    """

    def __init__(self, samples: int) -> None:
        # deque.append is atomic under the GIL: the frame path takes no lock to record.
        self._records: deque[FrameTimes] = deque(maxlen=samples)
        view = functools.partial(TimingView, self._records)
        self.capture_age_ms = view(lambda r: (r.prep_start_s - r.captured_s) * 1000.0)
        self.preprocess_ms = view(lambda r: (r.prep_end_s - r.prep_start_s) * 1000.0)
        self.inference_ms = view(lambda r: (r.invoke_end_s - r.invoke_start_s) * 1000.0)
        self.postprocess_ms = view(lambda r: (r.post_end_s - r.post_start_s) * 1000.0)
        self.handoff_ms = view(_handoff_ms)
        self.e2e_ms = view(lambda r: (r.post_end_s - r.captured_s) * 1000.0)
        self.prep_cpu_us = view(lambda r: r.prep_cpu_ns / 1000.0)
        self.infer_cpu_us = view(lambda r: r.infer_cpu_ns / 1000.0)
        self.post_cpu_us = view(lambda r: r.post_cpu_ns / 1000.0)
        self.inference_cpu_us = view(lambda r: r.invoke_cpu_ns / 1000.0)
        self.overhead_cpu_us = view(
            lambda r: (r.prep_cpu_ns + r.infer_cpu_ns + r.post_cpu_ns) / 1000.0
        )

    def record(
        self, item: Inferred, post_start_s: float, post_end_s: float, post_cpu_ns: int = 0
    ) -> None:
        """One frame's stage times, from capture to the end of its post-processing."""
        prepared = item.prepared
        self._records.append(
            FrameTimes(
                prepared.frame.captured_mono_s,
                prepared.prep_start_s,
                prepared.prep_end_s,
                item.invoke_start_s,
                item.invoke_end_s,
                post_start_s,
                post_end_s,
                prepared.prep_cpu_ns,
                prepared.infer_cpu_ns,
                post_cpu_ns,
                item.invoke_cpu_ns,
            )
        )


@dataclass(slots=True)
class Prepared:
    """A frame written into one of the input buffers, waiting for invoke."""

    feed: Feed
    frame: Frame  # metadata only once prepared: its ring slot is already released
    loaded: LoadedModel
    index: int  # which of the input buffers
    tensor: npt.NDArray[np.generic]
    transform: Transform
    prep_start_s: float
    prep_end_s: float
    prep_cpu_ns: int = 0  # CPU preparing this frame (and frames it replaced)
    infer_cpu_ns: int = 0  # the inference thread's CPU outside invoke


@dataclass(slots=True)
class Inferred:
    """Outputs (copies) of one invoke, waiting for the decoder."""

    prepared: Prepared
    outputs: list[npt.NDArray[np.generic]]
    invoke_start_s: float
    invoke_end_s: float
    invoke_cpu_ns: int = 0


class InputBuffers:
    """Three input buffers and a one-place "ready" mailbox between prep and infer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: Prepared | None = None
        self._in_use = -1  # buffer the inference thread took last (it may be invoking on it)
        self._buffers: list[npt.NDArray[np.generic]] = []
        self._owner: LoadedModel | None = None
        self.taken_at_s = 0.0  # when the inference thread last took a frame (invoke start)
        self.refreshed = 0  # ready frames replaced by a newer one before the model took them
        self.prep_wake = threading.Event()  # a new frame or queued outputs: work for prepost
        # The mailbox emptied (or was cleared), outputs queued: what the prepost thread
        # waits for while it holds a ready frame not worth refreshing, so that it does not
        # wake on every camera frame.
        self.taken_wake = threading.Event()
        self.infer_wake = threading.Event()  # a frame is ready

    @property
    def ready(self) -> Prepared | None:
        return self._ready

    def free_buffer(self, loaded: LoadedModel) -> tuple[int, npt.NDArray[np.generic]]:
        """A buffer neither being invoked on nor ready: the prepost thread's to write.

        Buffers belong to one loaded model; a swap gets fresh ones, so the old ones may
        still be read by an invoke on the old model without being overwritten.
        """
        with self._lock:
            if self._owner is not loaded:
                # Our own arrays, never the backend's input_buffer(): a backend that copies
                # a foreign tensor into its own (pinned) buffer inside infer() would
                # otherwise read that buffer while the next frame is written into it.
                template = loaded.backend.input_buffer()
                self._buffers = [np.empty_like(template) for _ in range(INPUT_BUFFERS)]
                self._owner = loaded
                self._in_use = -1
            ready = self._ready.index if self._ready is not None else -1
            # Three buffers, at most two busy: the lowest free index.
            index = 0
            while index in (self._in_use, ready):
                index += 1
            return index, self._buffers[index]

    def offer(self, prepared: Prepared) -> Prepared | None:
        """Make ``prepared`` the ready frame; returns the ready frame it replaced, if any."""
        with self._lock:
            replaced, self._ready = self._ready, prepared
            if replaced is not None:
                self.refreshed += 1
                # The work on a replaced frame is part of what the frame used cost.
                prepared.prep_cpu_ns += replaced.prep_cpu_ns
        self.infer_wake.set()
        return replaced

    def take(self, *, wake: bool = True) -> Prepared | None:
        """The ready frame, if any; ``wake=False`` leaves telling the prepost thread to the
        caller (``wake_prep``), so it can do so just before the GIL-free invoke."""
        with self._lock:
            prepared, self._ready = self._ready, None
            if prepared is not None and prepared.loaded is self._owner:
                self._in_use = prepared.index
                self.taken_at_s = time.monotonic()
        if prepared is not None and wake:
            self.wake_prep()  # nothing is ready now: prepare the next frame at once
        return prepared

    def wake_prep(self, *, work: bool = True) -> None:
        """Tell the prepost thread the mailbox emptied; ``work``: and there is work for it
        (a new frame or queued outputs). Without work it sleeps on until a publish."""
        self.taken_wake.set()
        if work:
            self.prep_wake.set()

    def clear(self) -> Prepared | None:
        """Drop a waiting frame (restart, swap); returns it for counting."""
        with self._lock:
            prepared, self._ready = self._ready, None
            self._owner = None
        self.wake_prep()
        return prepared


class PostQueue:
    """Bounded queue to the post-processing side; full means drop the oldest and count.

    A put wakes nobody: the inference thread wakes the prepost thread itself, just
    before its next invoke (``InputBuffers.wake_prep``).
    """

    def __init__(self, depth: int = POST_QUEUE_DEPTH) -> None:
        self._items: deque[Inferred] = deque()
        self._depth = depth
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, item: Inferred) -> Inferred | None:
        """Queue ``item``; returns the item dropped to make room, if any."""
        dropped = None
        with self._lock:
            if len(self._items) >= self._depth:
                dropped = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
        return dropped

    def get(self) -> Inferred | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)  # one C call on the deque: atomic under the GIL
