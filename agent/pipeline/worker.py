"""The threads of one model slot: ``prep`` → ``infer`` → ``post``.

* ``prep:<slot>`` takes the newest frame of its cameras (round robin), applies the
  motion gate, preprocesses it into a free input buffer and releases the frame's ring
  slot at once; while that frame waits for the model, a newer frame of the same camera
  replaces it when there is time (``handoff.worth_refreshing``);
* ``infer:<slot>`` does almost nothing but ``Backend.infer`` (copy in, ``invoke``,
  outputs copied out); LiteRT releases the GIL in ``invoke``, so preprocessing of
  frame N+1 and decoding of frame N-1 overlap the invoke of frame N;
* ``post:<slot>`` decodes, filters, debounces and emits events, fed through a small
  bounded queue that drops (and counts) rather than block the inference thread.

A watchdog outside (``check_stuck``) abandons a worker whose invoke has run too long
and starts fresh threads on a freshly loaded backend, because the hung one cannot be
used again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agent.capture.base import Frame
from agent.config.model import ModelConfig
from agent.errors import AgentError
from agent.events.seq import SeqAllocator
from agent.events.types import EventSink
from agent.log import get_logger
from agent.pipeline.cpu import CpuMeter
from agent.pipeline.faults import SlotFaults, slot_health
from agent.pipeline.handoff import (
    Feed,
    Inferred,
    InputBuffers,
    PostQueue,
    Prepared,
    Timings,
    ewma,
    worth_refreshing,
)
from agent.pipeline.model import LoadedModel
from agent.pipeline.post import PostStage
from agent.stats import SAMPLES_KEPT, HourCounter

log = get_logger(__name__)

IDLE_WAIT_S = 0.2


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
        self._stop = stop
        self._reloader = reloader  # fresh backend for a restart after a stuck invoke
        self._inputs = InputBuffers()
        self._post = PostQueue()
        for feed in feeds:
            feed.ring.add_listener(self._inputs.prep_wake.set)
        self._pending: LoadedModel | None = None
        self._swapped = threading.Event()
        self._generation = 0
        self._threads: list[threading.Thread] = []
        self._next_feed = 0
        self.busy_since: float | None = None
        self._invoke_est_s = 0.0  # running means: is there time to refresh the ready frame?
        self._prep_est_s = 0.0
        self._beats = dict.fromkeys(("prep", "infer", "post"), time.monotonic())
        self.timings = Timings(timing_samples)
        self.stuck = HourCounter()
        self.faults = SlotFaults(model.slot, model.decoder)
        self._poster = PostStage(
            model, seq=seq, sink=sink, faults=self.faults, timings=self.timings
        )

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._generation += 1
        now = time.monotonic()
        self._beats = dict.fromkeys(self._beats, now)
        loops: dict[str, Callable[[int], None]] = {"infer": self._run_single}
        if self.model.overlap_stages:
            loops = {"prep": self._run_prep, "infer": self._run_infer, "post": self._run_post}
        self._threads = [
            threading.Thread(
                target=loop,
                args=(self._generation,),
                name=f"{stage}:{self.model.slot}",
                daemon=True,
            )
            for stage, loop in loops.items()
        ]
        for thread in self._threads:
            thread.start()

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.alive

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    @property
    def events(self) -> int:
        return self._poster.events

    @property
    def sink_errors(self) -> int:
        return self._poster.sink_errors

    @property
    def errors(self) -> int:
        return self.faults.errors

    @property
    def last_error(self) -> str:
        return self.faults.last_error

    @property
    def heartbeat_s(self) -> float:
        """Oldest beat of the three loops: a hang in any of them freezes it."""
        return min(self._beats.values())

    @property
    def refreshed(self) -> int:
        """Ready frames replaced by a newer frame before the model took them."""
        return self._inputs.refreshed

    @property
    def post_dropped(self) -> int:
        """Inferred frames dropped because the post-processing queue was full."""
        return self._post.dropped

    def swap(self, loaded: LoadedModel, timeout_s: float) -> LoadedModel | None:
        """Hand a new model to the thread, applied between frames; returns the old one to close.

        Waits for the switch; if the thread cannot take it in time the new model is
        still queued and applied before the next frame.
        """
        if not self.alive:
            old, self.loaded = self.loaded, loaded
            self.faults.reset(self.model.decoder)
            return old
        self._swapped.clear()
        self._pending = loaded
        self._inputs.infer_wake.set()
        self._swapped.wait(timeout_s)
        return None

    # --- prep thread -----------------------------------------------------------------

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _run_prep(self, generation: int) -> None:
        inputs = self._inputs
        cpu = CpuMeter()
        while self._current(generation):
            self._beats["prep"] = time.monotonic()
            # Clear first: a publish or a take after the checks sets the event again.
            inputs.prep_wake.clear()
            loaded = self.loaded
            ready = inputs.ready
            if loaded is None:
                inputs.prep_wake.wait(IDLE_WAIT_S)
                continue
            if ready is None:
                picked = self._take()
            elif worth_refreshing(
                time.monotonic(), inputs.taken_at_s, self._invoke_est_s, self._prep_est_s
            ):
                picked = self._take_from(ready.feed)  # same camera: round robin stays fair
            else:
                picked = None
            if picked is None:
                inputs.prep_wake.wait(IDLE_WAIT_S)
                continue
            try:
                prepared = self._prepare(picked, loaded, generation)
                if prepared is not None:
                    prepared.prep_cpu_ns = cpu.take()
                    self._discard(inputs.offer(prepared))
            except Exception as exc:  # the thread must survive a bad frame
                picked[0].ring.release(picked[0].consumer)
                self._failed(exc, "preprocess")

    def _take_from(self, feed: Feed) -> tuple[Feed, Frame] | None:
        frame = feed.ring.take(feed.consumer)
        return None if frame is None else (feed, frame)

    def _take(self) -> tuple[Feed, Frame] | None:
        count = len(self.feeds)
        for i in range(count):
            picked = self._take_from(self.feeds[(self._next_feed + i) % count])
            if picked is not None:
                self._next_feed = (self._next_feed + i + 1) % count
                return picked
        return None

    def _prepare(
        self, picked: tuple[Feed, Frame], loaded: LoadedModel, generation: int
    ) -> Prepared | None:
        feed, frame = picked
        start = time.monotonic()
        if feed.motion is not None and not feed.motion.moved(frame.image):
            feed.ring.release(feed.consumer)
            feed.motion_skipped += 1
            return None
        # Re-read: a swap during the just-in-time wait must not prepare for a closed model.
        loaded = self.loaded or loaded
        index, tensor = self._inputs.free_buffer(loaded)
        transform = loaded.preprocessor.prepare(frame.image, tensor)
        feed.ring.release(feed.consumer)  # the frame is in the tensor now; free its slot
        if generation != self._generation:
            return None
        end = time.monotonic()
        self._prep_est_s = ewma(self._prep_est_s, end - start)
        return Prepared(feed, frame, loaded, index, tensor, transform, start, end)

    # --- infer thread -----------------------------------------------------------------

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            old, self.loaded = self.loaded, pending
            self.faults.reset(self.model.decoder)
            self._discard(self._inputs.clear())  # prepared for the old model's input
            self._swapped.set()
            if old is not None and old is not pending:
                old.close()
            log.info("model_swapped", slot=self.model.slot, path=str(pending.path))

    def _discard(self, prepared: Prepared | None) -> None:
        if prepared is not None:
            prepared.feed.discarded += 1

    def _run_infer(self, generation: int) -> None:
        inputs = self._inputs
        cpu = CpuMeter()
        while self._current(generation):
            self._beats["infer"] = time.monotonic()
            if self._pending is not None:
                self._apply_pending()
            inputs.infer_wake.clear()
            prepared = inputs.take()
            if prepared is None:
                inputs.infer_wake.wait(IDLE_WAIT_S)
                continue
            if prepared.loaded is not self.loaded:
                self._discard(prepared)
                continue
            try:
                inferred = self._invoke(prepared, generation, cpu)
            except Exception as exc:  # reported in health; the loop goes on
                prepared.feed.discarded += 1
                self._failed(exc, "inference")
                continue
            prepared.infer_cpu_ns = cpu.take()  # before the hand-off: post reads it
            dropped = self._post.put(inferred) if inferred is not None else None
            if dropped is not None:
                dropped.prepared.feed.discarded += 1

    def _invoke(self, prepared: Prepared, generation: int, cpu: CpuMeter) -> Inferred | None:
        start = time.monotonic()
        self.busy_since = start
        cpu_start = time.thread_time_ns()
        outputs = prepared.loaded.backend.infer(prepared.tensor)
        invoke_cpu_ns = time.thread_time_ns() - cpu_start
        cpu.exclude(invoke_cpu_ns)
        self.busy_since = None
        end = time.monotonic()
        self._invoke_est_s = ewma(self._invoke_est_s, end - start)
        if generation != self._generation:
            return None  # abandoned by the watchdog while blocked in infer()
        return Inferred(prepared, outputs, start, end, invoke_cpu_ns)

    # --- all stages in one thread (overlap_stages = false) ----------------------------

    def _run_single(self, generation: int) -> None:
        """Take, preprocess, invoke and post-process in turn: no hand-offs to wait for."""
        cpu = CpuMeter()
        while self._current(generation):
            self._beats = dict.fromkeys(self._beats, time.monotonic())
            if self._pending is not None:
                self._apply_pending()
            self._inputs.prep_wake.clear()
            loaded = self.loaded
            picked = None if loaded is None else self._take()
            if picked is None or loaded is None:
                self._inputs.prep_wake.wait(IDLE_WAIT_S)
                continue
            try:
                prepared = self._prepare(picked, loaded, generation)
                if prepared is None:
                    continue
                prepared.prep_cpu_ns = cpu.take()
                inferred = self._invoke(prepared, generation, cpu)
                if inferred is not None:
                    prepared.infer_cpu_ns = cpu.take()
                    self._poster.finish(inferred, cpu)
            except Exception as exc:  # the thread must survive a bad frame or a decoder bug
                picked[0].ring.release(picked[0].consumer)
                picked[0].discarded += 1
                self._failed(exc, "pipeline")

    # --- post thread -----------------------------------------------------------------

    def _run_post(self, generation: int) -> None:
        queue = self._post
        cpu = CpuMeter()
        while self._current(generation):
            self._beats["post"] = time.monotonic()
            queue.wake.clear()
            item = queue.get()
            if item is None:
                queue.wake.wait(IDLE_WAIT_S)
                continue
            try:
                self._poster.finish(item, cpu)
            except Exception as exc:  # the thread must survive a decoder bug
                item.prepared.feed.discarded += 1
                self._failed(exc, "postprocess")

    def _failed(self, exc: Exception, stage: str) -> None:
        self.faults.failed(exc, stage)

    # --- watchdog (monitor thread) ----------------------------------------------------

    def check_stuck(self, now_s: float | None = None) -> bool:
        """Restart the worker on a fresh backend when an invoke runs past the timeout."""
        busy = self.busy_since
        now = time.monotonic() if now_s is None else now_s
        if busy is None or now - busy <= self.model.inference_timeout_s or self._stop.is_set():
            return False
        self.stuck.add(now)
        self.faults.last_error = f"stuck: invoke running for {now - busy:.1f} s"
        log.error("inference_stuck", slot=self.model.slot, running_s=round(now - busy, 1))
        self._generation += 1  # the hung thread exits when (if) its invoke returns
        self.busy_since = None
        self._discard(self._inputs.clear())
        try:
            self.loaded = self._reloader()
        except AgentError as exc:
            self.loaded = None
            self.faults.last_error = f"stuck, and reload failed: {exc}"
            log.error(  # noqa: TRY400 - expected failure mode, no traceback
                "inference_restart_failed", slot=self.model.slot, error=str(exc)
            )
        self.start()
        return True

    def health(self, now_s: float | None = None) -> tuple[str, str]:
        now = time.monotonic() if now_s is None else now_s
        busy = self.busy_since
        stuck = busy is not None and now - busy > self.model.inference_timeout_s
        loaded = self.loaded
        serving = None if loaded is None else f"{loaded.path.name} on {loaded.backend.runtime.name}"
        return slot_health(
            stuck_running_s=now - busy if stuck and busy is not None else None,
            serving=serving,
            faults=self.faults,
            restarts=self.stuck.count(now),
        )
