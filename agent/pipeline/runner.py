"""The pipeline: capture threads per camera, one inference worker per model slot, a monitor.

Built from the config in ``start()``; ``stop()`` undoes it in reverse. The monitor
thread checks for stalled sources and stuck invokes and keeps the progress stamp the
systemd watchdog reads.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.capture import open_source
from agent.capture.base import Source
from agent.capture.ring import FrameRing
from agent.capture.worker import CameraCapture, CaptureSettings
from agent.config.camera import CameraConfig
from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.errors import AgentError, DecoderMismatchError, ModelLoadError
from agent.events.filters import Debouncer
from agent.events.motion import MotionGate
from agent.events.seq import SeqAllocator
from agent.events.types import EventSink
from agent.log import get_logger
from agent.pipeline.handoff import Feed
from agent.pipeline.model import LoadedModel, backend_options, load_model, resolve_backend
from agent.pipeline.worker import ModelWorker
from agent.stats import SAMPLES_KEPT

log = get_logger(__name__)

MONITOR_PERIOD_S = 0.25
SourceOpener = Callable[[CameraConfig], Source]


class Pipeline:
    def __init__(
        self,
        config: AgentConfig,
        sink: EventSink,
        state_dir: Path,
        model_paths: dict[str, Path] | None = None,
        *,
        opener: SourceOpener | None = None,
        paced: bool = True,
        stop: threading.Event | None = None,
        reconnect_base_s: float = 0.5,
        timing_samples: int = SAMPLES_KEPT,
    ) -> None:
        self._config = config
        self._sink = sink
        self._state_dir = state_dir
        self._model_paths = dict(model_paths or {})
        self._opener = opener or (lambda cam: open_source(cam, config.board, paced=paced))
        self._stop = stop or threading.Event()
        self._reconnect_base_s = reconnect_base_s
        self._timing_samples = timing_samples
        self._captures: dict[str, CameraCapture] = {}
        self._workers: dict[str, ModelWorker] = {}
        self._load_errors: dict[str, str] = {}
        self._reload_lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._monitor_beat_s = time.monotonic()
        self._seq: SeqAllocator | None = None

    # --- start / stop ----------------------------------------------------------------

    def _path_for(self, model: ModelConfig) -> Path:
        return self._model_paths.get(model.slot) or Path(model.path)

    def _load(self, model: ModelConfig, path: Path) -> LoadedModel:
        options = backend_options(self._config, model, path)
        return load_model(model, resolve_backend(self._config, model, path), path, options)

    def start(self) -> None:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._seq = SeqAllocator(self._state_dir)
        cfg = self._config
        consumers: dict[str, int] = {c.name: 0 for c in cfg.cameras}
        feeds: dict[str, list[Feed]] = {m.slot: [] for m in cfg.models}
        rings = {
            c.name: FrameRing(
                c.name, c.ring_slots, sum(1 for m in cfg.models if c in cfg.cameras_for(m))
            )
            for c in cfg.cameras
        }
        for model in cfg.models:
            for cam in cfg.cameras_for(model):
                motion = MotionGate(model.motion_threshold) if model.motion_gate else None
                feeds[model.slot].append(
                    Feed(
                        rings[cam.name],
                        consumers[cam.name],
                        Debouncer(model.debounce_frames),
                        motion,
                    )
                )
                consumers[cam.name] += 1
        for model in cfg.models:
            loaded: LoadedModel | None = None
            try:
                loaded = self._load(model, self._path_for(model))
            except AgentError as exc:
                self._load_errors[model.slot] = str(exc)
                log.error(  # noqa: TRY400 - health carries it; no traceback wanted
                    "model_load_failed", slot=model.slot, error=str(exc)
                )
            worker = ModelWorker(
                model,
                loaded=loaded,
                feeds=feeds[model.slot],
                seq=self._seq,
                sink=self._sink,
                stop=self._stop,
                reloader=functools.partial(self._reload_current, model),
                timing_samples=self._timing_samples,
            )
            self._workers[model.slot] = worker
            worker.start()
        for cam in cfg.cameras:
            settings = CaptureSettings(
                stall_timeout_s=cam.stall_timeout_s,
                reconnect_base_s=min(self._reconnect_base_s, cam.reconnect_max_s),
                reconnect_max_s=cam.reconnect_max_s,
            )
            capture = CameraCapture(
                cam.name,
                functools.partial(self._opener, cam),
                rings[cam.name],
                self._stop,
                settings,
            )
            self._captures[cam.name] = capture
            capture.start()
        self._monitor = threading.Thread(target=self._watch, name="pipeline-monitor", daemon=True)
        self._monitor.start()
        log.info("pipeline_started", cameras=len(self._captures), models=len(self._workers))

    def _reload_current(self, model: ModelConfig) -> LoadedModel:
        return self._load(model, self._current_path(model))

    def _current_path(self, model: ModelConfig) -> Path:
        worker = self._workers.get(model.slot)
        if worker is not None and worker.loaded is not None:
            return worker.loaded.path
        return self._path_for(model)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for name, capture in self._captures.items():
            if not capture.join(max(0.0, deadline - time.monotonic())):
                log.warning("thread_did_not_stop", thread=f"capture:{name}")
        for slot, worker in self._workers.items():
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning("thread_did_not_stop", thread=f"infer:{slot}")
            elif worker.loaded is not None:
                worker.loaded.close()
        if self._monitor is not None:
            self._monitor.join(max(0.0, deadline - time.monotonic()))
        log.info("pipeline_stopped")

    def _watch(self) -> None:
        while not self._stop.wait(MONITOR_PERIOD_S):
            self._monitor_beat_s = time.monotonic()
            for capture in self._captures.values():
                try:
                    capture.check_stall()
                except Exception as exc:
                    log.exception("stall_check_failed", camera=capture.name, error=str(exc))
            for worker in self._workers.values():
                try:
                    worker.check_stuck()
                except Exception as exc:
                    log.exception("stuck_check_failed", slot=worker.model.slot, error=str(exc))

    # --- control -------------------------------------------------------------------------

    def reload_model(self, slot: str, path: Path) -> None:
        """Load ``path``, then swap it in between frames; on failure the old model keeps serving."""
        worker = self._workers.get(slot)
        if worker is None:
            raise ModelLoadError(f"no model slot {slot!r}", model=str(path))
        with self._reload_lock:
            loaded = self._load(worker.model, path)  # raises; the old backend keeps serving
            old = worker.swap(loaded, timeout_s=max(1.0, worker.model.inference_timeout_s))
            if old is not None:
                old.close()
            self._model_paths[slot] = path
            self._load_errors.pop(slot, None)
        log.info("model_reloaded", slot=slot, path=str(path))

    @property
    def workers(self) -> dict[str, ModelWorker]:
        """The inference workers by slot (read-only use: stats, benchmarks)."""
        return dict(self._workers)

    def latest_frame(self, camera: str) -> npt.NDArray[np.uint8] | None:
        """A copy of ``camera``'s newest frame (BGR), or None (unknown camera, no frame yet)."""
        capture = self._captures.get(camera)
        return capture.ring.latest_copy() if capture is not None else None

    def sources_ended(self) -> bool:
        """True when every camera is a finite source that has delivered all its frames."""
        return bool(self._captures) and all(c.ended for c in self._captures.values())

    def last_progress_mono_s(self) -> float:
        """Oldest heartbeat among the inference loops and the monitor (a hang freezes it)."""
        beats = [self._monitor_beat_s, *(w.heartbeat_s for w in self._workers.values())]
        return min(beats)

    # --- reporting -------------------------------------------------------------------------

    def model_info(self) -> dict[str, dict[str, Any]]:
        info: dict[str, dict[str, Any]] = {}
        for slot, worker in self._workers.items():
            if worker.loaded is not None:
                info[slot] = worker.loaded.info()
            else:
                info[slot] = {
                    "path": str(self._path_for(worker.model)),
                    "error": self._load_errors.get(slot, worker.last_error),
                }
        return info

    def decoder_fault(self, slot: str) -> DecoderMismatchError | None:
        """Why ``slot`` is down for its decoder (reason ``decoder_mismatch``), else None.

        Set after ``faults.DECODER_FAILURE_LIMIT`` consecutive frames fail to decode;
        an update trial reports it as ``decoder_mismatch`` rather than ``health_failed``.
        """
        worker = self._workers.get(slot)
        return None if worker is None else worker.faults.decoder_fault

    def health_snapshot(self) -> dict[str, dict[str, str]]:
        now = time.monotonic()
        health: dict[str, dict[str, str]] = {}
        for name, capture in self._captures.items():
            status, detail = capture.health(now)
            health[f"camera:{name}"] = {"status": status, "detail": detail}
        for slot, worker in self._workers.items():
            status, detail = worker.health(now)
            if worker.loaded is None and slot in self._load_errors:
                detail = self._load_errors[slot]
            health[f"model:{slot}"] = {"status": status, "detail": detail}
        return health

    def stats_snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        cameras: dict[str, dict[str, Any]] = {}
        for name, capture in self._captures.items():
            feeds = [f for w in self._workers.values() for f in w.feeds if f.ring is capture.ring]
            ring = capture.ring
            cameras[name] = {
                "capture_fps": round(capture.captured.rate(now), 2),
                "inferred_fps": round(max((f.inferred.rate(now) for f in feeds), default=0.0), 2),
                "dropped_fps": round(max((d.rate(now) for d in ring.dropped), default=0.0), 2),
                "frames_captured": ring.published,
                "frames_dropped": max(ring.overwritten, default=0),
                "motion_skipped": sum(f.motion_skipped for f in feeds),
                "reconnects_last_hour": capture.reconnects.count(now),
                "stalls_last_hour": capture.stalls.count(now),
            }
        models: dict[str, dict[str, Any]] = {}
        for slot, worker in self._workers.items():
            t = worker.timings
            runtime = worker.loaded.backend.runtime if worker.loaded is not None else None
            models[slot] = {
                "inference_ms": t.inference_ms.summary(),
                "preprocess_ms": t.preprocess_ms.summary(),
                "postprocess_ms": t.postprocess_ms.summary(),
                "handoff_ms": t.handoff_ms.summary(),
                "capture_age_ms": t.capture_age_ms.summary(),
                "e2e_ms": t.e2e_ms.summary(),
                "overhead_cpu_us": t.overhead_cpu_us.summary(),  # CPU outside invoke, per frame
                "runtime": {"name": runtime.name, "version": runtime.version} if runtime else None,
                "events": worker.events,
                "frames_refreshed": worker.refreshed,
                "errors": worker.errors,
                "stuck_last_hour": worker.stuck.count(now),
            }
        return {"cameras": cameras, "models": models}
