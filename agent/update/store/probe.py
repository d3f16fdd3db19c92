"""Health probes for the trial of a newly activated model.

``HealthProbe`` is what the installer calls: ``golden`` on the staged model before
activation, ``trial`` after it. ``OfflineProbe`` (used by ``update install``) loads
the model itself and runs smoke inferences; ``LiveProbe`` (used by the daemon) first
runs the candidate in shadow beside the serving model when the manifest asks for it,
then asks the running pipeline to reload the slot and watches its health.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from agent.errors import AgentError, Reason
from agent.inference.registry import BackendOptions, create_backend
from agent.log import get_logger
from agent.update.store.golden import reason_of, run_golden
from agent.update.store.models import ModelStore
from agent.update.store.shadow import ShadowTrial
from agent.update.store.slotmodel import DetectorFactory
from agent.update.trust.manifest import Manifest

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TrialResult:
    ok: bool
    detail: str = ""
    latency_p95_ms: float | None = None
    # The agent is stopping: no verdict; the journal stays in trial and start-up retries.
    interrupted: bool = False
    # Contract reason of a failure (None: health_failed).
    reason: Reason | None = None
    # Shadow-trial figures for the op state (frames compared, agreement, rate change).
    shadow: dict[str, Any] | None = None


class HealthProbe(Protocol):
    def golden(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        """Run ``manifest.trial.golden`` on the staged, not yet active model; never raises."""
        ...

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


def golden_result(
    detectors: DetectorFactory | None, slot: str, model_path: Path, manifest: Manifest
) -> TrialResult:
    cases = manifest.trial.golden
    if not cases:
        return TrialResult(ok=True)
    if detectors is None:  # fail closed: signed checks that cannot run are not passed
        return TrialResult(
            ok=False, detail="golden cases need the slot's config", reason=Reason.GOLDEN_MISMATCH
        )
    outcome = run_golden(detectors, slot, model_path, cases)
    return TrialResult(outcome.ok, outcome.detail, reason=outcome.reason)


def golden_on_staged(
    probe: HealthProbe, store: ModelStore, slot: str, sha: str, manifest: Manifest
) -> TrialResult:
    """``probe.golden`` on the staged version ``sha`` (its staging-built engine if it has one)."""
    info = store.version_info(slot, sha) or {}
    name = str(info.get("engine_file") or manifest.model_file)
    return probe.golden(slot, store.version_dir(slot, sha) / name, manifest)


class OfflineProbe:
    """Loads the model with the manifest's backend and runs N smoke inferences.

    With ``detectors`` (the slot config) it also runs golden cases; it has no live
    frames, so a manifest's shadow trial is skipped (logged).
    """

    def __init__(
        self, options: BackendOptions | None = None, detectors: DetectorFactory | None = None
    ) -> None:
        self._options = options or BackendOptions()
        self._detectors = detectors

    def golden(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        return golden_result(self._detectors, slot, model_path, manifest)

    def _slot_fit(self, slot: str, model_path: Path) -> TrialResult | None:
        """Load the model as its slot runs it (decoder fit and a decoded smoke frame).

        Without this an offline install would commit a model the slot's decoder cannot
        read: the smoke inferences below only prove that the runtime runs it.
        """
        if self._detectors is None:
            return None
        try:
            self._detectors.open(slot, model_path).close()
        except AgentError as exc:
            if exc.data.get("unknown_slot"):  # no [[models]] entry: no decoder to check against
                log.warning("slot_fit_skipped", slot=slot, why=exc.message)
                return None
            reason = reason_of(exc, Reason.HEALTH_FAILED)
            return TrialResult(
                ok=False, detail=f"model does not fit the slot: {exc}", reason=reason
            )
        return None

    def trial(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        if manifest.trial.shadow is not None:
            log.warning("shadow_trial_skipped", slot=slot, why="no live frames offline")
        return self._slot_fit(slot, model_path) or self._smoke(slot, model_path, manifest)

    def _smoke(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
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
        *,
        detectors: DetectorFactory | None = None,
        shadow: ShadowTrial | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._health = health
        self._stop = stop
        self._configured = configured
        self._poll_s = poll_s
        self._detectors = detectors
        self._shadow = shadow

    def golden(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        return golden_result(self._detectors, slot, model_path, manifest)

    def trial(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        failed, figures = self._shadow_phase(slot, model_path, manifest)
        if failed is not None:
            return failed
        try:
            self._pipeline.reload_model(slot, model_path)
        except AgentError as exc:
            reason = reason_of(exc, Reason.HEALTH_FAILED)
            return TrialResult(
                ok=False, detail=f"reload failed: {exc}", reason=reason, shadow=figures
            )
        deadline = time.monotonic() + manifest.health.trial_s
        while True:
            healthy, detail = self._health.model_health(slot)
            if not healthy:
                # The pipeline's slot health says why: a decoder failing frame after frame.
                mismatch = detail.partition(": ")[2].startswith(Reason.DECODER_MISMATCH.value)
                down = Reason.DECODER_MISMATCH if mismatch else None
                return TrialResult(ok=False, detail=detail, reason=down, shadow=figures)
            if time.monotonic() >= deadline:
                return TrialResult(ok=True, detail=detail, shadow=figures)
            if self._stop.wait(self._poll_s):
                return TrialResult(ok=False, detail="agent stopping", interrupted=True)

    def _shadow_phase(
        self, slot: str, model_path: Path, manifest: Manifest
    ) -> tuple[TrialResult | None, dict[str, Any] | None]:
        """(failed result or None, figures): the candidate beside the serving model."""
        spec = manifest.trial.shadow
        if spec is None:
            return None, None
        if self._shadow is None:  # fail closed, as for golden cases
            reason = Reason.SHADOW_DISAGREEMENT
            return TrialResult(ok=False, detail="no shadow runner", reason=reason), None
        outcome = self._shadow.run(slot, model_path, spec)
        if outcome.interrupted:
            return TrialResult(ok=False, detail="agent stopping", interrupted=True), None
        figures = outcome.figures or None
        if outcome.failure is None:
            return None, figures
        failed = TrialResult(
            ok=False, detail=outcome.failure, reason=outcome.reason, shadow=figures
        )
        return failed, figures

    def restored(self, slot: str, model_path: Path | None) -> None:
        target = model_path or self._configured.get(slot)
        if target is not None:
            self._pipeline.reload_model(slot, target)
