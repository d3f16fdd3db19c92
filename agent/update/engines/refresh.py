"""Daemon start-up: rebuild installed TensorRT engines that no longer fit, in the background.

A build takes minutes on a Jetson, longer than systemd's start timeout, so the daemon
starts, the slot reports ``degraded`` with the reason while ``EngineRefresher`` builds
on its own thread, and the pipeline reloads the slot when the build is done. A failed
rebuild leaves the slot down with the reason (``hash_mismatch``, ``incompatible``,
``insufficient_space``) and is not retried until the next start: no crash loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from agent.config.root import AgentConfig
from agent.errors import AgentError, EngineRebuildError
from agent.inference.trt_build import BuildTarget
from agent.log import get_logger
from agent.update.engines.builder import EngineBuilder
from agent.update.engines.cache import prune_quietly, runtime_target
from agent.update.engines.policy import Choice, describe, target_facts
from agent.update.engines.rebuild import installed_engine, plan_engine, rebuild_engine
from agent.update.store.factory import engine_builders
from agent.update.store.models import ModelStore

log = get_logger(__name__)


class RefreshTarget(Protocol):
    def reload_model(self, slot: str, path: Path) -> None: ...

    def model_info(self) -> dict[str, dict[str, Any]]: ...


class EngineRefresher:
    """Daemon start-up: rebuild every installed engine that no longer fits, one at a time."""

    def __init__(
        self,
        state_dir: Path,
        builders: Mapping[str, EngineBuilder],
        pipeline: RefreshTarget,
        stop: threading.Event,
        runtime: BuildTarget,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = ModelStore(state_dir)
        self._builders = dict(builders)
        self._pipeline = pipeline
        self._stop = stop
        self._runtime = runtime
        self._clock = clock
        self._lock = threading.Lock()
        # slot -> (status, detail, since): "degraded" while building, "down" after a failure
        self._state: dict[str, tuple[str, str, float]] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="engine-refresh", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        """A TensorRT build cannot be interrupted: the thread is left behind if it is in one."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("thread_did_not_stop", thread="engine-refresh")

    def health(self) -> dict[str, dict[str, str]]:
        """``model:<slot>`` components for slots being rebuilt or whose rebuild failed."""
        now = self._clock()
        with self._lock:
            state = dict(self._state)
        out: dict[str, dict[str, str]] = {}
        for slot, (status, detail, since) in state.items():
            text = f"{detail} ({now - since:.0f} s so far)" if status == "degraded" else detail
            out[f"model:{slot}"] = {"status": status, "detail": text}
        return out

    def run(self) -> None:
        for slot in self._builders:
            if self._stop.is_set():
                return
            try:
                self.refresh(slot)
            except Exception as exc:  # one slot's surprise must not stop the others
                log.exception("trt_engine_refresh_failed", slot=slot, error=str(exc))

    def refresh(self, slot: str) -> None:
        path = self._store.current_model(slot)
        installed = installed_engine(path) if path is not None else None
        if installed is None:
            return
        plan = plan_engine(installed, self._runtime)
        failed = "error" in self._pipeline.model_info().get(slot, {})
        if plan.choice is Choice.REBUILD:
            why = (
                f"rebuilding the TensorRT engine from {installed.onnx_name}: built for "
                f"{describe(installed.recorded)}, this device has "
                f"{describe(target_facts(self._runtime))}"
            )
        elif failed:
            why = f"the TensorRT engine did not load; rebuilding it from {installed.onnx_name}"
        else:
            return
        self._set(slot, "degraded", why)
        log.warning("trt_engine_rebuilding", slot=slot, reason=why)
        force = plan.choice is not Choice.REBUILD
        try:
            rebuilt = rebuild_engine(installed, self._builders[slot], self._runtime, force=force)
        except EngineRebuildError as exc:
            self._failed(slot, f"TensorRT engine rebuild failed: {exc}")
            return
        if self._stop.is_set():
            return
        if self._store.current_model(slot) != installed.engine:
            # An update was activated meanwhile; its trial loaded it. Do not load over it.
            log.info("trt_engine_rebuild_superseded", slot=slot, engine=rebuilt.name)
            self._clear(slot)
            return
        try:
            self._pipeline.reload_model(slot, installed.engine)  # the load resolves to the rebuild
        except AgentError as exc:
            self._failed(slot, f"the rebuilt TensorRT engine {rebuilt.name} does not load: {exc}")
            return
        self._clear(slot)

    def _clear(self, slot: str) -> None:
        with self._lock:
            self._state.pop(slot, None)

    def _failed(self, slot: str, detail: str) -> None:
        """The slot stays down with ``detail`` until the next start: no retry loop."""
        self._set(slot, "down", detail)
        log.error("trt_engine_rebuild_failed", slot=slot, error=detail)

    def _set(self, slot: str, status: str, detail: str) -> None:
        with self._lock:
            self._state[slot] = (status, detail, self._clock())


def start_engine_refresh(
    cfg: AgentConfig, state_dir: Path, pipeline: RefreshTarget, stop: threading.Event
) -> EngineRefresher | None:
    """Daemon start-up, before the update service starts: prune the cache, then rebuild.

    None when no slot runs TensorRT or TensorRT is not importable (nothing to rebuild on).
    """
    builders = engine_builders(cfg)
    runtime = runtime_target() if builders else None
    prune_quietly(state_dir, runtime=runtime)
    if runtime is None:
        return None
    refresher = EngineRefresher(state_dir, builders, pipeline, stop, runtime)
    refresher.start()
    return refresher
