"""The inference thread of one model slot: newest frame → preprocess → invoke → decode → event.

Per-frame Python work is kept to a few calls; the frame's ring slot is released as
soon as it has been written into the input tensor. A watchdog outside (``check_stuck``)
abandons a worker whose invoke has run too long and starts a fresh one on a freshly
loaded backend, because the hung one cannot be used again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.capture.base import Frame
from agent.capture.ring import FrameRing
from agent.config.model import ModelConfig
from agent.errors import AgentError
from agent.events.filters import Debouncer, apply_thresholds, suppress_overlaps
from agent.events.motion import MotionGate
from agent.events.seq import SeqAllocator
from agent.events.types import Detection, DetectionEvent, EventSink
from agent.log import get_logger
from agent.pipeline.model import LoadedModel
from agent.pipeline.stats import SAMPLES_KEPT, HourCounter, RateWindow, SampleWindow

log = get_logger(__name__)

IDLE_WAIT_S = 0.2


@dataclass(slots=True)
class Feed:
    """One camera as seen by one model slot."""

    ring: FrameRing
    consumer: int
    debounce: Debouncer
    motion: MotionGate | None
    inferred: RateWindow = field(default_factory=RateWindow)
    motion_skipped: int = 0


class Timings:
    """Per-stage sliding windows of one model slot, in milliseconds."""

    def __init__(self, samples: int) -> None:
        self.capture_age_ms = SampleWindow(samples)
        self.preprocess_ms = SampleWindow(samples)
        self.inference_ms = SampleWindow(samples)
        self.postprocess_ms = SampleWindow(samples)
        self.e2e_ms = SampleWindow(samples)


class ModelWorker:
    def __init__(
        self,
        model: ModelConfig,
        *,
        loaded: LoadedModel | None,
        feeds: list[Feed],
        seq: SeqAllocator,
        sink: EventSink,
        stop: threading.Event,
        reloader: Callable[[], LoadedModel],
        timing_samples: int = SAMPLES_KEPT,
    ) -> None:
        self.model = model
        self.loaded = loaded
        self.feeds = feeds
        self._seq = seq
        self._sink = sink
        self._stop = stop
        self._reloader = reloader  # fresh backend for a restart after a stuck invoke
        self._wake = threading.Event()
        for feed in feeds:
            feed.ring.add_listener(self._wake.set)
        self._pending: LoadedModel | None = None
        self._swapped = threading.Event()
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._next_feed = 0
        self.busy_since: float | None = None
        self.heartbeat_s = time.monotonic()
        self.timings = Timings(timing_samples)
        self.stuck = HourCounter()
        self.errors = 0
        self.events = 0
        self.sink_errors = 0
        self.last_error = ""

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._generation += 1
        self.heartbeat_s = time.monotonic()
        self._thread = threading.Thread(
            target=self._run,
            args=(self._generation,),
            name=f"infer:{self.model.slot}",
            daemon=True,
        )
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def swap(self, loaded: LoadedModel, timeout_s: float) -> LoadedModel | None:
        """Hand a new model to the thread, applied between frames; returns the old one to close.

        Waits for the switch; if the thread cannot take it in time the new model is
        still queued and applied before the next frame.
        """
        if not self.alive:
            old, self.loaded = self.loaded, loaded
            return old
        self._swapped.clear()
        self._pending = loaded
        self._wake.set()
        self._swapped.wait(timeout_s)
        return None

    # --- the loop ------------------------------------------------------------------

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            old, self.loaded = self.loaded, pending
            self._swapped.set()
            if old is not None and old is not pending:
                old.close()
            log.info("model_swapped", slot=self.model.slot, path=str(pending.path))

    def _run(self, generation: int) -> None:
        while self._current(generation):
            self.heartbeat_s = time.monotonic()
            if self._pending is not None:
                self._apply_pending()
            if self.loaded is None:
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            picked = self._take()
            if picked is None:
                self._wake.wait(IDLE_WAIT_S)
                continue
            try:
                self._process(picked, self.loaded, generation)
            except AgentError as exc:
                self.errors += 1
                self.last_error = str(exc)
                log.warning("inference_failed", slot=self.model.slot, error=str(exc))
            except Exception as exc:  # the inference thread must survive a decoder bug
                self.errors += 1
                self.last_error = str(exc)
                log.exception("inference_crashed", slot=self.model.slot, error=str(exc))

    def _take(self) -> tuple[Feed, Frame] | None:
        # Clear first: a frame published after the scan sets the event again.
        self._wake.clear()
        count = len(self.feeds)
        for i in range(count):
            feed = self.feeds[(self._next_feed + i) % count]
            frame = feed.ring.take(feed.consumer)
            if frame is not None:
                self._next_feed = (self._next_feed + i + 1) % count
                return feed, frame
        return None

    def _process(self, picked: tuple[Feed, Frame], loaded: LoadedModel, generation: int) -> None:
        feed, frame = picked
        start = time.monotonic()
        if feed.motion is not None and not feed.motion.moved(frame.image):
            feed.ring.release(feed.consumer)
            feed.motion_skipped += 1
            return
        backend = loaded.backend
        tensor = backend.input_buffer()
        transform = loaded.preprocessor.prepare(frame.image, tensor)
        feed.ring.release(feed.consumer)  # the frame is in the tensor now; free its slot
        invoke_start = time.monotonic()
        self.busy_since = invoke_start
        outputs = backend.infer(tensor)
        self.busy_since = None
        invoke_end = time.monotonic()
        if generation != self._generation:
            return  # abandoned by the watchdog while blocked in infer()
        model = self.model
        detections = loaded.decoder(outputs, transform)
        if detections:
            detections = apply_thresholds(detections, model.threshold, model.label_thresholds)
            if model.decoder == "ssd_postprocess" and len(detections) > 1:
                detections = suppress_overlaps(detections, model.nms_iou, model.max_detections)
        detections = feed.debounce(detections)
        if detections:
            self._emit(frame, detections)
        end = time.monotonic()
        feed.inferred.add(end)
        t = self.timings
        t.capture_age_ms.add((start - frame.captured_mono_s) * 1000.0)
        t.preprocess_ms.add((invoke_start - start) * 1000.0)
        t.inference_ms.add((invoke_end - invoke_start) * 1000.0)
        t.postprocess_ms.add((end - invoke_end) * 1000.0)
        t.e2e_ms.add((end - frame.captured_mono_s) * 1000.0)

    def _emit(self, frame: Frame, detections: list[Detection]) -> None:
        event = DetectionEvent(
            seq=self._seq.next(),
            ts=frame.captured_wall_s,
            camera=frame.camera,
            model=self.model.slot,
            detections=tuple(detections),
            frame_seq=frame.seq,
            latency_ms=(time.monotonic() - frame.captured_mono_s) * 1000.0,
        )
        self.events += 1
        try:
            self._sink(event)
        except Exception as exc:  # a sink bug must not stop inference
            self.sink_errors += 1
            log.exception("event_sink_failed", slot=self.model.slot, error=str(exc))

    # --- watchdog (monitor thread) ----------------------------------------------------

    def check_stuck(self, now_s: float | None = None) -> bool:
        """Restart the worker on a fresh backend when an invoke runs past the timeout."""
        busy = self.busy_since
        now = time.monotonic() if now_s is None else now_s
        if busy is None or now - busy <= self.model.inference_timeout_s or self._stop.is_set():
            return False
        self.stuck.add(now)
        self.last_error = f"stuck: invoke running for {now - busy:.1f} s"
        log.error("inference_stuck", slot=self.model.slot, running_s=round(now - busy, 1))
        self._generation += 1  # the hung thread exits when (if) its invoke returns
        self.busy_since = None
        try:
            self.loaded = self._reloader()
        except AgentError as exc:
            self.loaded = None
            self.last_error = f"stuck, and reload failed: {exc}"
            log.error(  # noqa: TRY400 - expected failure mode, no traceback
                "inference_restart_failed", slot=self.model.slot, error=str(exc)
            )
        self.start()
        return True

    def health(self, now_s: float | None = None) -> tuple[str, str]:
        now = time.monotonic() if now_s is None else now_s
        busy = self.busy_since
        if busy is not None and now - busy > self.model.inference_timeout_s:
            return "down", f"stuck: invoke running for {now - busy:.1f} s"
        if self.loaded is None:
            return "down", self.last_error or "no model loaded"
        restarts = self.stuck.count(now)
        if restarts:
            return "degraded", f"worker restarted {restarts}x in the last hour after a stuck invoke"
        if self.errors and self.last_error:
            return "ok", f"last error: {self.last_error}"
        return "ok", f"{self.loaded.path.name} on {self.loaded.backend.runtime.name}"
