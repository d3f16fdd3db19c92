"""Shadow trial: the candidate beside the serving model on the same live frames.

The serving model keeps serving untouched: the shadow never enters the pipeline's
threads. It samples the newest frame of the slot's cameras (``latest_frame``, a copy),
and its own thread runs a second copy of the serving model (the reference) and the
candidate on that same frame, both as the slot runs them, one interpreter thread each.
Comparing on one frame through both models keeps the inputs identical; the cost is two
inferences per compared frame, paced so the shadow thread is busy at most ``duty`` of
the time, and halved while the serving fps is down more than 10 % from its value before
the shadow began. A bounded queue between sampler and shadow drops (and counts) frames
the shadow could not take. The maths is ``trust.agreement``.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from agent.errors import DecoderError, Reason
from agent.log import get_logger
from agent.update.store.golden import reason_of
from agent.update.store.slotmodel import Detector, DetectorFactory
from agent.update.trust.agreement import ShadowTally, adjust_duty, pause_after_s, shadow_verdict
from agent.update.trust.trialspec import ShadowSpec

log = get_logger(__name__)


@runtime_checkable
class LiveFrames(Protocol):
    def latest_frame(self, camera: str) -> npt.NDArray[np.uint8] | None: ...
    def model_info(self) -> dict[str, dict[str, Any]]: ...
    def stats_snapshot(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ShadowBudget:
    duty: float = 0.1  # share of wall time the shadow thread may be busy
    queue_frames: int = 2
    fps_check_s: float = 1.0
    idle_wait_s: float = 0.05


@dataclass(frozen=True, slots=True)
class ShadowOutcome:
    failure: str | None  # None: the candidate reached the manifest's thresholds
    reason: Reason | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


def serving_fps(stats: dict[str, Any], cameras: Sequence[str]) -> float:
    """Frames per second the serving pipeline inferred on ``cameras`` (sum)."""
    seen = stats.get("cameras", {})
    return float(sum(seen.get(c, {}).get("inferred_fps", 0.0) for c in cameras))


class _Run:
    """One shadow run's shared state: the sampler thread feeds it, the shadow thread drains it."""

    def __init__(self, spec: ShadowSpec, budget: ShadowBudget, top_label: bool) -> None:
        self.spec = spec
        self.top_label = top_label
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.queue: collections.deque[npt.NDArray[np.uint8]] = collections.deque()
        self.max_queue = budget.queue_frames
        self.tally = ShadowTally()
        self.dropped = 0
        self.busy_s = 0.0
        self.last_busy_s = 0.0
        self.error: tuple[str, Reason] | None = None
        self.done = threading.Event()

    def offer(self, frame: npt.NDArray[np.uint8]) -> None:
        with self.lock:
            if len(self.queue) >= self.max_queue:
                self.queue.popleft()  # the newest frame wins
                self.dropped += 1
            self.queue.append(frame)
        self.wake.set()

    def take(self) -> npt.NDArray[np.uint8] | None:
        with self.lock:
            return self.queue.popleft() if self.queue else None


class ShadowTrial:
    def __init__(
        self,
        frames: LiveFrames,
        detectors: DetectorFactory,
        cameras: Mapping[str, Sequence[str]],
        stop: threading.Event,
        budget: ShadowBudget | None = None,
    ) -> None:
        self._frames = frames
        self._detectors = detectors
        self._cameras = cameras
        self._stop = stop
        self._budget = budget or ShadowBudget()

    def run(self, slot: str, candidate_path: Path, spec: ShadowSpec) -> ShadowOutcome:
        """Compare until ``spec.min_frames`` frames (or ``spec.max_s``); never raises."""
        serving = self._frames.model_info().get(slot, {})
        if "runtime" not in serving:
            return ShadowOutcome("no serving model to compare with", Reason.SHADOW_DISAGREEMENT)
        if Path(serving["path"]).resolve() == candidate_path.resolve():
            # A restart mid-trial loads ``current``, the candidate: comparing it with itself
            # would prove nothing, so the trial fails closed (and the previous model returns).
            why = "the candidate is already serving (restart during its trial)"
            return ShadowOutcome(why, Reason.SHADOW_DISAGREEMENT)
        try:
            candidate = self._detectors.open(slot, candidate_path, threads=1)
        except Exception as exc:  # a runtime that refuses the file fails the trial
            return ShadowOutcome(
                f"candidate does not load: {exc}", reason_of(exc, Reason.HEALTH_FAILED)
            )
        try:
            reference = self._detectors.open(slot, Path(serving["path"]), threads=1)
        except Exception as exc:  # memory, a runtime hiccup: no comparison, no commit
            candidate.close()
            return ShadowOutcome(
                f"serving model does not load for the shadow: {exc}", Reason.HEALTH_FAILED
            )
        try:
            return self._compare(slot, reference, candidate, spec)
        finally:
            reference.close()
            candidate.close()

    def _compare(
        self, slot: str, reference: Detector, candidate: Detector, spec: ShadowSpec
    ) -> ShadowOutcome:
        budget, cameras = self._budget, list(self._cameras.get(slot, ()))
        run = _Run(spec, budget, candidate.top_label)
        thread = threading.Thread(
            target=self._shadow_loop,
            args=(run, reference, candidate),
            name=f"shadow:{slot}",
            daemon=True,
        )
        baseline = serving_fps(self._frames.stats_snapshot(), cameras)
        lowest, duty = baseline, budget.duty
        started = time.monotonic()
        next_check = started + budget.fps_check_s
        fingerprints: dict[str, bytes] = {}
        turn = 0
        thread.start()
        try:
            while not run.done.is_set():
                now = time.monotonic()
                if self._stop.is_set():
                    return ShadowOutcome("agent stopping", interrupted=True)
                if now - started >= spec.max_s or run.error is not None:
                    break
                if now >= next_check:
                    fps = serving_fps(self._frames.stats_snapshot(), cameras)
                    lowest, duty = min(lowest, fps), adjust_duty(duty, baseline, fps)
                    next_check = now + budget.fps_check_s
                frame = self._sample(cameras, turn, fingerprints)
                turn += 1
                if frame is None:
                    self._stop.wait(budget.idle_wait_s)
                    continue
                run.offer(frame)
                # Pace on the shadow's own last step: busy at most ``duty`` of the time.
                self._stop.wait(max(budget.idle_wait_s, pause_after_s(run.last_busy_s, duty)))
        finally:
            run.done.set()
            run.wake.set()
            thread.join(30.0)
        elapsed = time.monotonic() - started
        with run.lock:
            tally, dropped, busy_s = run.tally, run.dropped, run.busy_s
        figures: dict[str, Any] = {
            **tally.figures(),
            "frames_dropped": dropped,
            "seconds": round(elapsed, 1),
            "shadow_ms_per_frame": round(1000.0 * busy_s / tally.frames, 2)
            if tally.frames
            else None,
            "serving_fps_before": round(baseline, 2),
            "serving_fps_lowest": round(lowest, 2),
            "duty": round(duty, 3),
        }
        if run.error is not None:
            return ShadowOutcome(run.error[0], run.error[1], figures)
        failure = shadow_verdict(tally, spec)
        log.info("shadow_trial_done", slot=slot, passed=failure is None, **figures)
        return ShadowOutcome(failure, Reason.SHADOW_DISAGREEMENT if failure else None, figures)

    def _sample(
        self, cameras: list[str], turn: int, fingerprints: dict[str, bytes]
    ) -> npt.NDArray[np.uint8] | None:
        """The newest frame of the next camera, round robin; None if it is one already compared."""
        if not cameras:
            return None
        camera = cameras[turn % len(cameras)]
        frame = self._frames.latest_frame(camera)
        if frame is None:
            return None
        # A stalled camera repeats its last frame: compare each frame once.
        mark = hashlib.blake2b(
            np.ascontiguousarray(frame[::8, ::8]).tobytes(), digest_size=16
        ).digest()
        if fingerprints.get(camera) == mark:
            return None
        fingerprints[camera] = mark
        return frame

    def _shadow_loop(self, run: _Run, reference: Detector, candidate: Detector) -> None:
        while not run.done.is_set():
            run.wake.clear()
            frame = run.take()
            if frame is None:
                run.wake.wait(self._budget.idle_wait_s)
                continue
            start = time.monotonic()
            try:
                ref = reference.detect(frame)
            except Exception as exc:  # the serving model's copy: not the candidate's fault
                log.warning("shadow_reference_failed", error=str(exc))
                continue
            try:
                cand = candidate.detect(frame)
            except Exception as exc:  # the candidate fails on live frames: the trial fails
                reason = (
                    Reason.DECODER_MISMATCH
                    if isinstance(exc, DecoderError)
                    else Reason.HEALTH_FAILED
                )
                run.error = (f"candidate failed on a live frame: {exc}", reason)
                run.done.set()
                return
            busy = time.monotonic() - start
            with run.lock:
                run.tally = run.tally.add(ref, cand, run.spec.iou_min, run.top_label)
                run.busy_s += busy
                run.last_busy_s = busy
                if run.tally.frames >= run.spec.min_frames:
                    run.done.set()
