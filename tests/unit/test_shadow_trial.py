"""The shadow runner and the live probe's trial, with stand-ins for the pipeline and models.

The real thing runs in tests/integration/test_update_trial.py; here the edges that are
hard to reach with a real camera: a stalled camera, a slow shadow, a serving fps that
drops, a decoder that fails on live frames, a restart mid-trial, a stop.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from agent.config import load_config
from agent.errors import DecoderError, DecoderMismatchError, Reason
from agent.events.types import Detection
from agent.fleet.bundle import BundleSpec, manifest_document
from agent.update.store.probe import LiveProbe
from agent.update.store.shadow import ShadowBudget, ShadowTrial
from agent.update.transfer.wiring import live_installer
from agent.update.trust.envelope import canonical_bytes
from agent.update.trust.manifest import Manifest, parse_manifest
from agent.update.trust.trialspec import ShadowSpec, TrialSpec

SERVING = Path("/models/serving.tflite")
CANDIDATE = Path("/models/candidate.tflite")
FACE = Detection("face", 0.9, (10.0, 10.0, 50.0, 50.0))
FAST = ShadowBudget(duty=1.0, fps_check_s=0.02, idle_wait_s=0.005)


class Frames:
    def __init__(self, *, stalled: bool = False, fps: list[float] | None = None) -> None:
        self._counter = itertools.count()
        self._stalled = stalled
        self._fps = iter(fps or [])
        self._last_fps = 10.0
        self.path = SERVING

    def latest_frame(self, camera: str) -> npt.NDArray[np.uint8] | None:
        assert camera == "door"
        value = 0 if self._stalled else next(self._counter) % 250
        return np.full((32, 32, 3), value, dtype=np.uint8)

    def model_info(self) -> dict[str, dict[str, Any]]:
        return {"detector": {"path": str(self.path), "runtime": "litert"}}

    def stats_snapshot(self) -> dict[str, Any]:
        self._last_fps = next(self._fps, self._last_fps)
        return {"cameras": {"door": {"inferred_fps": self._last_fps}}}


class Model:
    def __init__(self, found: list[Detection], *, fails: Exception | None = None) -> None:
        self.found, self.fails, self.delay_s, self.closed = found, fails, 0.0, False

    @property
    def top_label(self) -> bool:
        return False

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        del image
        time.sleep(self.delay_s)
        if self.fails is not None:
            raise self.fails
        return list(self.found)

    def close(self) -> None:
        self.closed = True


class Models:
    def __init__(self, serving: Model, candidate: Model | Exception) -> None:
        self.by_path: dict[Path, Model | Exception] = {SERVING: serving, CANDIDATE: candidate}
        self.threads: list[int | None] = []

    def open(self, slot: str, path: Path, threads: int | None = None) -> Model:
        assert slot == "detector"
        self.threads.append(threads)
        found = self.by_path[path]
        if isinstance(found, Exception):
            raise found
        return found


def shadow(frames: Frames, models: Models, budget: ShadowBudget = FAST) -> ShadowTrial:
    return ShadowTrial(frames, models, {"detector": ["door"]}, threading.Event(), budget)


SPEC = ShadowSpec(min_agreement=0.9, min_frames=10, max_s=5)


def test_agreeing_candidate_passes_with_figures() -> None:
    serving, candidate = Model([FACE]), Model([FACE])
    models = Models(serving, candidate)
    outcome = shadow(Frames(), models).run("detector", CANDIDATE, SPEC)
    assert outcome.failure is None
    assert outcome.figures["frames_compared"] == 10
    assert outcome.figures["agreement"] == 1.0
    assert outcome.figures["reference_per_frame"] == 1.0
    assert models.threads == [1, 1]  # one interpreter thread each beside the serving model
    assert serving.closed
    assert candidate.closed


def test_disagreeing_candidate_fails_with_reason_and_figures() -> None:
    outcome = shadow(Frames(), Models(Model([FACE]), Model([]))).run("detector", CANDIDATE, SPEC)
    assert outcome.reason is Reason.SHADOW_DISAGREEMENT
    assert outcome.failure == "shadow agreement 0.000 < 0.9 over 10 frames"
    assert outcome.figures["rate_change"] == 1.0


def test_a_stalled_camera_is_compared_once_then_too_few_frames() -> None:
    spec = ShadowSpec(min_agreement=0.9, min_frames=10, max_s=1)
    outcome = shadow(Frames(stalled=True), Models(Model([]), Model([]))).run(
        "detector", CANDIDATE, spec
    )
    assert outcome.figures["frames_compared"] == 1
    assert outcome.failure == "shadow compared 1 frames, fewer than min_frames 10"


def test_a_slow_shadow_drops_frames_and_counts_them() -> None:
    serving = Model([])
    serving.delay_s = 0.05
    spec = ShadowSpec(min_agreement=0.9, min_frames=4, max_s=5)
    outcome = shadow(Frames(), Models(serving, Model([]))).run("detector", CANDIDATE, spec)
    assert outcome.failure is None
    assert outcome.figures["frames_dropped"] > 0


def test_duty_halves_when_the_serving_fps_drops() -> None:
    budget = ShadowBudget(duty=0.5, fps_check_s=0.01, idle_wait_s=0.005)
    frames = Frames(fps=[10.0, 10.0, 8.0, 8.0, 8.0])
    outcome = shadow(frames, Models(Model([]), Model([])), budget).run("detector", CANDIDATE, SPEC)
    assert outcome.figures["serving_fps_before"] == 10.0
    assert outcome.figures["serving_fps_lowest"] == 8.0
    assert outcome.figures["duty"] < 0.5


def test_decoder_failing_on_live_frames_is_a_decoder_mismatch() -> None:
    broken = Model([], fails=DecoderError("scores tensor has 3 columns"))
    outcome = shadow(Frames(), Models(Model([]), broken)).run("detector", CANDIDATE, SPEC)
    assert outcome.reason is Reason.DECODER_MISMATCH
    assert "scores tensor" in (outcome.failure or "")


def test_candidate_not_fitting_the_decoder_at_load() -> None:
    refused = DecoderMismatchError("1 output", decoder="blazeface", outputs=[], fits=["classify"])
    outcome = shadow(Frames(), Models(Model([]), refused)).run("detector", CANDIDATE, SPEC)
    assert outcome.reason is Reason.DECODER_MISMATCH


def test_the_candidate_serving_already_fails_closed() -> None:
    frames = Frames()
    frames.path = CANDIDATE  # a restart mid-trial loaded ``current``
    outcome = shadow(frames, Models(Model([]), Model([]))).run("detector", CANDIDATE, SPEC)
    assert outcome.reason is Reason.SHADOW_DISAGREEMENT
    assert "already serving" in (outcome.failure or "")


def test_a_stop_interrupts_without_a_verdict() -> None:
    trial = shadow(Frames(stalled=True), Models(Model([]), Model([])))
    trial._stop.set()
    assert trial.run("detector", CANDIDATE, SPEC).interrupted


# --- the live probe ------------------------------------------------------------------


class Pipeline:
    def __init__(self, refuse: Exception | None = None, health: str = "ok: serving") -> None:
        self.refuse, self.health = refuse, health
        self.reloads: list[Path] = []

    def reload_model(self, slot: str, path: Path) -> None:
        self.reloads.append(path)
        if self.refuse is not None:
            raise self.refuse

    def model_health(self, slot: str) -> tuple[bool, str]:
        return not self.health.startswith("down"), self.health


def manifest(trial: TrialSpec, short_range_model: Path) -> Manifest:
    spec = BundleSpec(
        model=short_range_model, slot="detector", fleet="f", manifest_version=1, release=1
    )
    doc = manifest_document(spec, 1, 1_700_000_000.0, b"{}")
    doc["health"] = {"trial_s": 1}
    return dataclasses.replace(parse_manifest(canonical_bytes(doc)), trial=trial)


def probe(pipeline: Pipeline, runner: ShadowTrial | None = None) -> LiveProbe:
    return LiveProbe(pipeline, pipeline, threading.Event(), {}, poll_s=0.05, shadow=runner)


def test_live_trial_reload_refused_for_the_decoder(short_range_model: Path) -> None:
    refused = DecoderMismatchError("1 output", decoder="blazeface", outputs=[], fits=[])
    result = probe(Pipeline(refuse=refused)).trial(
        "detector", CANDIDATE, manifest(TrialSpec(), short_range_model)
    )
    assert (result.ok, result.reason) == (False, Reason.DECODER_MISMATCH)


def test_live_trial_slot_down_for_the_decoder(short_range_model: Path) -> None:
    pipeline = Pipeline(health="down: decoder_mismatch: decoder blazeface failed on 5 frames")
    result = probe(pipeline).trial("detector", CANDIDATE, manifest(TrialSpec(), short_range_model))
    assert (result.ok, result.reason) == (False, Reason.DECODER_MISMATCH)
    other = probe(Pipeline(health="down: stuck")).trial(
        "detector", CANDIDATE, manifest(TrialSpec(), short_range_model)
    )
    assert (other.ok, other.reason) == (False, None)  # the installer reports health_failed


@pytest.mark.parametrize("agrees", [True, False])
def test_live_trial_shadow_first_serving_model_untouched_until_it_passes(
    short_range_model: Path, agrees: bool
) -> None:
    pipeline = Pipeline()
    runner = shadow(Frames(), Models(Model([FACE]), Model([FACE] if agrees else [])))
    trial = TrialSpec(shadow=SPEC)
    result = probe(pipeline, runner).trial(
        "detector", CANDIDATE, manifest(trial, short_range_model)
    )
    assert result.shadow is not None
    assert result.shadow["frames_compared"] == 10
    if agrees:
        assert result.ok
        assert pipeline.reloads == [CANDIDATE]
    else:
        assert (result.ok, result.reason) == (False, Reason.SHADOW_DISAGREEMENT)
        assert pipeline.reloads == []  # the candidate never served


def test_live_trial_without_a_shadow_runner_fails_closed(short_range_model: Path) -> None:
    trial = TrialSpec(shadow=SPEC)
    result = probe(Pipeline()).trial("detector", CANDIDATE, manifest(trial, short_range_model))
    assert (result.ok, result.reason) == (False, Reason.SHADOW_DISAGREEMENT)


class LivePipeline(Pipeline, Frames):
    """A pipeline that shares its frames, as the daemon's does."""

    def __init__(self) -> None:
        Pipeline.__init__(self)
        Frames.__init__(self)

    def health_snapshot(self) -> dict[str, dict[str, str]]:
        return {"model:detector": {"status": "ok", "detail": "serving"}}


def test_the_board_profile_sets_the_shadow_share(
    tmp_path: Path, write_config: Callable[[str], Path], short_range_model: Path
) -> None:
    cfg = write_config(
        f"""
        [storage]
        state_dir = "{tmp_path / "state"}"
        [board]
        shadow_busy_share = 0.04
        [[cameras]]
        name = "door"
        source = "file:/dev/null"
        [[models]]
        slot = "detector"
        path = "{short_range_model}"
        """
    )
    installer = live_installer(
        load_config(cfg, environ={}).config, LivePipeline(), threading.Event()
    )
    probe = installer.probe
    assert isinstance(probe, LiveProbe)
    runner = probe._shadow
    assert runner is not None
    assert runner._budget.duty == 0.04
