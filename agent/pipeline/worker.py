"""The threads of one model slot: ``prepost`` ⇄ ``infer``.

* ``prepost:<slot>`` feeds the model and finishes its outputs, in that order of
  urgency: when no frame is ready it takes the newest frame of its cameras (round
  robin), applies the motion gate, preprocesses it into a free input buffer and
  releases the frame's ring slot at once; then it decodes, filters, debounces and
  emits the events of frames the model has finished; while a ready frame waits, a newer
  frame of the same camera replaces it when there is time and it is worth it
  (``handoff.worth_refreshing``);
* ``infer:<slot>`` does almost nothing but ``Backend.infer`` (copy in, ``invoke``,
  outputs copied out) while the model is the bottleneck; LiteRT releases the GIL in
  ``invoke``, so preprocessing of frame N+1 and decoding of frame N-1 overlap the
  invoke of frame N. Outputs go back through a small bounded queue that drops (and
  counts) rather than block. While the model waits for the camera, ``infer`` decodes
  and feeds the model itself (``feeder.Feeder``): one wake-up per frame, no hand-off.

One thread on each side of the model, not one per stage: the take of frame N+1 and
the outputs of frame N arrive together, and one wake-up serves both (each thread
hand-off costs a futex wake and a GIL hand-over, more CPU than a small model's decode).

A watchdog outside (``check_stuck``) abandons a worker whose invoke has run too long
and starts fresh threads on a freshly loaded backend, because the hung one cannot be
used again.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from agent.config.model import ModelConfig
from agent.errors import AgentError
from agent.events.seq import SeqAllocator
from agent.events.types import EventSink
from agent.log import get_logger
from agent.pipeline.cpu import CpuMeter
from agent.pipeline.faults import SlotFaults, slot_health
from agent.pipeline.feeder import Feeder
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
            feed.ring.add_listener(self._on_publish)
        self._pending: LoadedModel | None = None
        self._swapped = threading.Event()
        self._generation = 0
        self._threads: list[threading.Thread] = []
        # No frame waited for the model at the end of the last invoke: a publish wakes the
        # inference thread (which then feeds itself), not prepost.
        self._camera_bound = False
        self.busy_since: float | None = None
        self._invoke_est_s = 0.0  # running means: is there time to refresh the ready frame?
        self._beats = dict.fromkeys(("prepost", "infer"), time.monotonic())
        self.timings = Timings(timing_samples)
        self.stuck = HourCounter()
        self.faults = SlotFaults(model.slot, model.decoder)
        self._poster = PostStage(
            model, seq=seq, sink=sink, faults=self.faults, timings=self.timings
        )
        self._feeder = Feeder(feeds, self._inputs, self.faults, lambda: self.loaded)

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._generation += 1
        now = time.monotonic()
        self._beats = dict.fromkeys(self._beats, now)
        loops: dict[str, Callable[[int], None]] = {"infer": self._run_single}
        if self.model.overlap_stages:
            loops = {"prepost": self._run_prepost, "infer": self._run_infer}
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

    def thread_idents(self) -> list[int]:
        """Thread ids of the slot's running threads (their CPU clocks, for the bench)."""
        return [t.ident for t in self._threads if t.ident is not None and t.is_alive()]

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    @property
    def events(self) -> int:
        return self._poster.events

    @property
    def errors(self) -> int:
        return self.faults.errors

    @property
    def last_error(self) -> str:
        return self.faults.last_error

    @property
    def heartbeat_s(self) -> float:
        """Oldest beat of the loops: a hang in any of them freezes it."""
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

    # --- prepost thread --------------------------------------------------------------

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _on_publish(self) -> None:
        """A camera published (capture thread): wake the thread that feeds the model."""
        (self._inputs.infer_wake if self._camera_bound else self._inputs.prep_wake).set()

    def _run_prepost(self, generation: int) -> None:
        inputs, queue, feeder = self._inputs, self._post, self._feeder
        cpu = CpuMeter()
        current = functools.partial(self._current, generation)
        while self._current(generation):
            self._beats["prepost"] = time.monotonic()
            # Clear first: a publish, take or put after the checks sets the events again.
            inputs.prep_wake.clear()
            inputs.taken_wake.clear()
            loaded = self.loaded
            ready = inputs.ready
            # 1. Feed the model: it must never wait for a frame the source delivered.
            if loaded is not None and ready is None and feeder.feed(loaded, current, cpu):
                continue
            # 2. Finish what the model did.
            if self._poster.finish_queued(queue, cpu):
                continue
            # 3. Refresh the waiting frame, or sleep until something changes.
            if loaded is None or ready is None:
                inputs.prep_wake.wait(IDLE_WAIT_S)
            elif not worth_refreshing(
                time.monotonic(),
                inputs.taken_at_s,
                self._invoke_est_s,
                feeder.prep_est_s,
                ready.frame.captured_mono_s,
            ):
                # Not worth it now. While the model runs, no publish makes it so before the
                # take: sleep through publishes. An idle model takes the frame at once, and
                # only a new frame gives work then (the take wakes this thread only for work).
                (inputs.taken_wake if self.busy_since is not None else inputs.prep_wake).wait(
                    IDLE_WAIT_S
                )
            elif not feeder.feed(loaded, current, cpu, ready.feed):
                inputs.prep_wake.wait(IDLE_WAIT_S)

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
        inputs, feeder = self._inputs, self._feeder
        cpu = CpuMeter()
        current = functools.partial(self._current, generation)
        while self._current(generation):
            self._beats["infer"] = time.monotonic()
            if self._pending is not None:
                self._apply_pending()
            inputs.infer_wake.clear()
            # The take and the outputs queued last round wake the prepost thread only just
            # before the next invoke (which releases the GIL): woken earlier, it would take
            # the GIL while this thread still needs it to start the invoke.
            prepared = inputs.take(wake=False)
            loaded = self.loaded
            # Nothing ready and the model free: feed it from here if a frame is there, spared
            # a hand-off (not while prepost is feeding: its frame is offered in a moment).
            if (
                prepared is None
                and loaded is not None
                and feeder.feed(loaded, current, cpu, blocking=False)
            ):
                inputs.infer_wake.clear()  # set by our own offer
                prepared = inputs.take(wake=False)
            if prepared is None:
                self._wake_prep()
                inputs.infer_wake.wait(IDLE_WAIT_S)
                continue
            if prepared.loaded is not self.loaded:
                self._discard(prepared)
                continue
            try:
                inferred = self._invoke(prepared, generation, cpu, wake=self._wake_prep)
            except Exception as exc:  # reported in health; the loop goes on
                prepared.feed.discarded += 1
                self.faults.failed(exc, "inference")
                continue
            prepared.infer_cpu_ns = cpu.take()  # before the hand-off: post reads it
            if inferred is None:
                continue
            # No frame waiting, none arrived during the invoke: the model waits for the
            # camera. Decode here and feed the next frame from here too, spared hand-offs.
            # With a frame waiting, the next invoke must not wait for the decode.
            nothing_ready = inputs.ready is None
            self._camera_bound = nothing_ready and not feeder.any_new()
            if nothing_ready and self._poster.finish_now(inferred, self._post, cpu):
                continue
            dropped = self._post.put(inferred)
            self._discard(dropped.prepared if dropped is not None else None)

    def _wake_prep(self) -> None:
        """Tell prepost the mailbox is empty, waking it only if there is work for it (just
        before an invoke, or when idle)."""
        self._inputs.wake_prep(work=len(self._post) > 0 or self._feeder.any_new())

    def _invoke(
        self,
        prepared: Prepared,
        generation: int,
        cpu: CpuMeter,
        wake: Callable[[], None] | None = None,
    ) -> Inferred | None:
        start = time.monotonic()
        self.busy_since = start
        if wake is not None:
            wake()
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
        current = functools.partial(self._current, generation)
        while self._current(generation):
            self._beats = dict.fromkeys(self._beats, time.monotonic())
            if self._pending is not None:
                self._apply_pending()
            self._inputs.prep_wake.clear()
            loaded = self.loaded
            picked = None if loaded is None else self._feeder.newest()
            if picked is None or loaded is None:
                self._inputs.prep_wake.wait(IDLE_WAIT_S)
                continue
            try:
                prepared = self._feeder.prepare(picked, loaded, current)
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
                self.faults.failed(exc, "pipeline")

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
