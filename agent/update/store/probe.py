"""Health probes for the trial of a newly activated model.

``HealthProbe`` is what the installer calls. ``OfflineProbe`` (used by ``update
install``) loads the model itself and runs smoke inferences; ``LiveProbe`` (used
by the daemon) asks the running pipeline to reload the slot and watches its health.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.errors import AgentError
from agent.inference.registry import BackendOptions, create_backend
from agent.log import get_logger
from agent.update.trust.manifest import Manifest

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TrialResult:
    ok: bool
    detail: str = ""
    latency_p95_ms: float | None = None
    # The agent is stopping: no verdict; the journal stays in trial and start-up retries.
    interrupted: bool = False


class HealthProbe(Protocol):
    def trial(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        """Run the new model of ``slot`` against ``manifest.health``; never raises."""
        ...

    def restored(self, slot: str, model_path: Path | None) -> None:
        """The slot was rolled back to ``model_path`` (None: the configured model)."""
        ...


def sample_frame(buffer: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """A deterministic, non-constant frame in the input's shape and dtype (a smooth gradient)."""
    ramp = np.linspace(0.0, 1.0, num=buffer.size, dtype=np.float64).reshape(buffer.shape)
    if np.issubdtype(buffer.dtype, np.integer):
        info = np.iinfo(buffer.dtype)  # type: ignore[type-var]  # narrowed by issubdtype above
        return (info.min + ramp * (info.max - info.min)).astype(buffer.dtype)
    return (ramp * 2.0 - 1.0).astype(buffer.dtype)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class OfflineProbe:
    """Loads the model with the manifest's backend and runs N smoke inferences."""

    def __init__(self, options: BackendOptions | None = None) -> None:
        self._options = options or BackendOptions()

    def trial(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        health = manifest.health
        try:
            backend = create_backend(manifest.backend, model_path, self._options)
        except Exception as exc:  # a runtime that chokes on the file is a failed trial
            return TrialResult(ok=False, detail=f"model does not load: {exc}")
        try:
            frame = sample_frame(backend.input_buffer())
            latencies: list[float] = []
            outputs: list[npt.NDArray[np.generic]] = []
            for _ in range(health.smoke_inferences):
                start = time.perf_counter()
                outputs = backend.infer(frame)
                latencies.append((time.perf_counter() - start) * 1000.0)
        except Exception as exc:  # any runtime failure is a failed trial, by design
            return TrialResult(ok=False, detail=f"inference failed: {exc}")
        finally:
            backend.close()
        latency = p95(latencies)
        shapes = tuple(tuple(int(d) for d in out.shape) for out in outputs)
        if health.output_shapes is not None and shapes != health.output_shapes:
            return TrialResult(
                ok=False,
                detail=f"output shapes {shapes} != {health.output_shapes}",
                latency_p95_ms=latency,
            )
        bad = [i for i, out in enumerate(outputs) if not np.all(np.isfinite(out))]
        if bad:
            return TrialResult(
                ok=False, detail=f"outputs {bad} contain NaN or Inf", latency_p95_ms=latency
            )
        if latency > health.max_latency_ms:
            return TrialResult(
                ok=False,
                detail=f"p95 latency {latency:.1f} ms > {health.max_latency_ms} ms",
                latency_p95_ms=latency,
            )
        log.info("trial_passed", slot=slot, p95_ms=round(latency, 2), runs=len(latencies))
        return TrialResult(
            ok=True,
            detail=f"{len(latencies)} inferences, p95 {latency:.1f} ms",
            latency_p95_ms=latency,
        )

    def restored(self, slot: str, model_path: Path | None) -> None:
        del slot, model_path  # nothing is running: the next start-up loads what current names


class ModelReloader(Protocol):
    def reload_model(self, slot: str, path: Path) -> None:
        """Load ``path`` for ``slot``, camera kept; on failure raise and keep the old backend."""
        ...


class SlotHealth(Protocol):
    def model_health(self, slot: str) -> tuple[bool, str]:
        """(healthy, detail) for the model now serving ``slot``: no errors, latency in budget."""
        ...


class LiveProbe:
    """Daemon trial: reload in the running pipeline, then watch health for ``health.trial_s``."""

    def __init__(
        self,
        pipeline: ModelReloader,
        health: SlotHealth,
        stop: threading.Event,
        configured: dict[str, Path],
        poll_s: float = 1.0,
    ) -> None:
        self._pipeline = pipeline
        self._health = health
        self._stop = stop
        self._configured = configured
        self._poll_s = poll_s

    def trial(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        try:
            self._pipeline.reload_model(slot, model_path)
        except AgentError as exc:
            return TrialResult(ok=False, detail=f"reload failed: {exc}")
        deadline = time.monotonic() + manifest.health.trial_s
        while True:
            healthy, detail = self._health.model_health(slot)
            if not healthy:
                return TrialResult(ok=False, detail=detail)
            if time.monotonic() >= deadline:
                return TrialResult(ok=True, detail=detail)
            if self._stop.wait(self._poll_s):
                return TrialResult(ok=False, detail="agent stopping", interrupted=True)

    def restored(self, slot: str, model_path: Path | None) -> None:
        target = model_path or self._configured.get(slot)
        if target is not None:
            self._pipeline.reload_model(slot, target)
