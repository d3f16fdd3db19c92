"""Hand-offs between the three threads of a model slot: prep → infer → post.

``InputPair`` double-buffers the model input: the preprocess thread writes frame N+1
into one buffer while the inference thread invokes on frame N in the other, so the
inference thread does little but ``invoke`` (which releases the GIL). At most one
prepared frame waits; a buffer is never written while an invoke reads it.

``PostQueue`` carries outputs to the post-processing thread: small, bounded, and a
full queue drops the oldest item and counts it, so the inference thread never blocks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from agent.capture.ring import FrameRing
from agent.events.filters import Debouncer
from agent.events.motion import MotionGate
from agent.pipeline.stats import RateWindow, SampleWindow

if TYPE_CHECKING:
    from agent.capture.base import Frame
    from agent.inference.preprocess import Transform
    from agent.pipeline.model import LoadedModel

POST_QUEUE_DEPTH = 4
# Just-in-time preprocessing: the next frame is taken ``slack`` before the model is
# expected to be free, so it is fresh yet ready in time. The slack tracks a quantile of
# the prep thread's wake-up jitter: a late frame (the model waited) raises it by a
# step, a frame in time lowers it by a step LATE_TARGET / (1 - LATE_TARGET) as large,
# so about LATE_TARGET of the frames arrive late, and then only by a little. Growing
# by the whole lateness instead let one scheduler hiccup hold every following frame
# in the buffer for hundreds of frames (capture-to-event grew by ~0.5 ms here).
LATE_TARGET = 0.1
SLACK_STEP_FRACTION = 0.05  # of the expected invoke
SLACK_MIN_S = 0.00005
EWMA_WEIGHT = 0.1


def prep_delay_s(
    now_s: float, invoke_start_s: float, invoke_est_s: float, prep_est_s: float, slack_s: float
) -> float:
    """How long the prep thread waits before taking the next frame (0: take it now).

    Preparing frame N+1 as soon as invoke N starts would make it wait a whole invoke
    in the buffer (capture-to-event grows by one invoke); taking the newest frame
    just before the model is free keeps the overlap and the freshness.
    """
    due_s = invoke_start_s + invoke_est_s - prep_est_s - slack_s
    return max(0.0, due_s - now_s)


def adapt_slack(slack_s: float, invoke_est_s: float, late_s: float) -> float:
    """The next slack: one step up after a late frame, a small step down after one in time.

    ``late_s`` is how long the inference thread waited for a frame after an invoke
    (0 when one was ready). Bounded by ``SLACK_MIN_S`` and one whole invoke (prepare
    at once: a model faster than its source never waits for the prep thread's timer).
    """
    step_s = SLACK_STEP_FRACTION * invoke_est_s
    if late_s > 0.0:
        slack_s += step_s * (1.0 - LATE_TARGET)
    else:
        slack_s -= step_s * LATE_TARGET
    return min(max(invoke_est_s, SLACK_MIN_S), max(SLACK_MIN_S, slack_s))


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


class Timings:
    """Per-stage sliding windows of one model slot, in milliseconds."""

    def __init__(self, samples: int) -> None:
        self.capture_age_ms = SampleWindow(samples)
        self.preprocess_ms = SampleWindow(samples)
        self.inference_ms = SampleWindow(samples)
        self.postprocess_ms = SampleWindow(samples)
        # Waiting between stages: prepared → invoke start, plus invoke end → decode start.
        self.handoff_ms = SampleWindow(samples)
        self.e2e_ms = SampleWindow(samples)


@dataclass(slots=True)
class Prepared:
    """A frame written into one of the input buffers, waiting for invoke."""

    feed: Feed
    frame: Frame  # metadata only once prepared: its ring slot is already released
    loaded: LoadedModel
    index: int  # which buffer of the pair
    tensor: npt.NDArray[np.generic]
    transform: Transform
    prep_start_s: float
    prep_end_s: float


@dataclass(slots=True)
class Inferred:
    """Outputs (copies) of one invoke, waiting for the decoder."""

    prepared: Prepared
    outputs: list[npt.NDArray[np.generic]]
    invoke_start_s: float
    invoke_end_s: float


class InputPair:
    """Two input buffers and a one-place "ready" mailbox between prep and infer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: Prepared | None = None
        self._in_use = -1  # buffer the inference thread took last (it may be invoking on it)
        self._buffers: list[npt.NDArray[np.generic]] = []
        self._owner: LoadedModel | None = None
        self.taken_at_s = 0.0  # when the inference thread last took a frame (invoke start)
        self.prep_wake = threading.Event()  # ring publish, or the mailbox emptied
        self.infer_wake = threading.Event()  # a frame is ready

    def has_ready(self) -> bool:
        return self._ready is not None

    def free_buffer(self, loaded: LoadedModel) -> tuple[int, npt.NDArray[np.generic]]:
        """The buffer the preprocess thread may write now (call only when nothing is ready).

        Buffers belong to one loaded model; a swap gets a fresh pair, so the old pair may
        still be read by an invoke on the old model without being overwritten.
        """
        with self._lock:
            if self._owner is not loaded:
                # Both are our own arrays, never the backend's input_buffer(): a backend
                # that copies a foreign tensor into its own (pinned) buffer inside infer()
                # would otherwise read that buffer while the next frame is written into it.
                template = loaded.backend.input_buffer()
                self._buffers = [np.empty_like(template), np.empty_like(template)]
                self._owner = loaded
                self._in_use = -1
            index = 1 if self._in_use == 0 else 0
            return index, self._buffers[index]

    def offer(self, prepared: Prepared) -> None:
        with self._lock:
            self._ready = prepared
        self.infer_wake.set()

    def take(self) -> Prepared | None:
        with self._lock:
            prepared, self._ready = self._ready, None
            if prepared is not None and prepared.loaded is self._owner:
                self._in_use = prepared.index
                self.taken_at_s = time.monotonic()
        if prepared is not None:
            self.prep_wake.set()  # the other buffer is free: prepare the next frame now
        return prepared

    def clear(self) -> Prepared | None:
        """Drop a waiting frame (restart, swap); returns it for counting."""
        with self._lock:
            prepared, self._ready = self._ready, None
            self._owner = None
        self.prep_wake.set()
        return prepared


class PostQueue:
    """Bounded queue to the post-processing thread; full means drop the oldest and count."""

    def __init__(self, depth: int = POST_QUEUE_DEPTH) -> None:
        self._items: deque[Inferred] = deque()
        self._depth = depth
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self.dropped = 0

    def put(self, item: Inferred) -> Inferred | None:
        """Queue ``item``; returns the item dropped to make room, if any."""
        dropped = None
        with self._lock:
            if len(self._items) >= self._depth:
                dropped = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
        self.wake.set()
        return dropped

    def get(self) -> Inferred | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
