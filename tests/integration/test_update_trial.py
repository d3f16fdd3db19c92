"""A trial that proves the model, on a RUNNING daemon over a real Mosquitto (issue 15 item 4).

Real pipeline on the sample clip, real signed bundles published with ``edge-fleet``:

* a model whose outputs do not fit the slot's decoder ends ``failed``/``decoder_mismatch``;
* a golden case the staged model does not reproduce is rejected with ``golden_mismatch``
  naming the case, before activation;
* a candidate that disagrees with the serving model in shadow is rolled back with
  ``shadow_disagreement`` and the shadow figures in the op state;
* a good candidate with golden cases and a shadow trial commits;

and in every failing case the previous model keeps detecting.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.daemon.supervisor import Supervisor
from agent.fleet.golden import expected_cases
from tests.conftest import require_asset
from tests.integration import test_update_daemon as update_daemon
from tests.integration.test_update_daemon import (
    Watch,
    assert_seq_increasing,
    deployment_id,
    publish,
    update_status,
)
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker
# The running daemon of the update-to-a-running-daemon tests.
daemon = update_daemon.daemon
Daemon = tuple[Supervisor, Path, Watch]


def trial_bundle(
    keys: Path, out: Path, model: Path, version: int, trial: dict[str, Any], *extra: Path
) -> Path:
    fields = {"extra_files": extra, "health": {"trial_s": 2}, "trial": trial, "chunk_size": 65536}
    return update_daemon.bundle(keys, out, model, version, **fields)


def golden(model: Path, *images: Path) -> list[dict[str, Any]]:
    """Golden cases as ``bundle create --golden`` writes them (the daemon's slot settings)."""
    config = AgentConfig(models=[ModelConfig(slot="detector", path=str(model), threshold=0.5)])
    return expected_cases(config, "detector", model, list(images))


def serving(sup: Supervisor) -> str:
    assert sup.pipeline is not None
    return str(sup.pipeline.model_info()["detector"]["path"])


def keeps_detecting(watch: Watch, after: float) -> None:
    count = len(watch.detections())
    assert wait_for(lambda: len(watch.detections()) >= count + 2, 30), "detections stopped"
    assert any(t > after for t, _ in watch.detections())
    assert_seq_increasing(watch.detections())


def final_state(watch: Watch, dep: str) -> tuple[float, dict[str, Any]]:
    # `publish` has its own subscription: its answer can come before the watch's copy.
    def terminal() -> bool:
        ops = watch.ops(dep)
        return bool(ops) and ops[-1][1].get("status") in {"successful", "failed"}

    wait_for(terminal, timeout_s=20)
    return watch.ops(dep)[-1]


def deploy(
    broker: MosquittoBroker, watch: Watch, bundle: Path
) -> tuple[str, int, float, dict[str, Any]]:
    """``edge-fleet publish`` of ``bundle``: its deployment id, the exit code, and the time
    and document of its final op state."""
    dep = deployment_id(bundle)
    code, _ = publish(broker, bundle)
    finished, state = final_state(watch, dep)
    return dep, code, finished, state


def test_model_not_fitting_the_decoder_fails_with_decoder_mismatch(
    *, daemon: Daemon, mosquitto: MosquittoBroker, keys: Path, tmp_path: Path
) -> None:
    sup, _cfg, watch = daemon
    before = serving(sup)
    # A real classifier (one [1, 2] output) sent to the BlazeFace slot.
    classifier = require_asset("models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    bad = trial_bundle(keys, tmp_path / "b-cls", classifier, 2, {})
    _dep, code, finished, state = deploy(mosquitto, watch, bad)
    assert code == 1
    assert (state["status"], state["reason"]) == ("failed", "decoder_mismatch"), state
    assert "blazeface" in state["detail"]
    assert serving(sup) == before
    keeps_detecting(watch, finished)


def test_golden_mismatch_is_rejected_naming_the_case_active_untouched(
    *,
    daemon: Daemon,
    mosquitto: MosquittoBroker,
    keys: Path,
    tmp_path: Path,
    short_range_model: Path,
    images_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sup, cfg, watch = daemon
    before = serving(sup)
    photo, empty = images_dir / "astronaut.png", images_dir / "coffee.png"
    cases = golden(short_range_model, empty, photo)
    assert cases[1]["expect"]["detections"], "the astronaut's face is the point of the case"
    wrong = copy.deepcopy(cases)
    box = wrong[1]["expect"]["detections"][0]["box"]
    wrong[1]["expect"]["detections"][0]["box"] = [v + 60 for v in box]  # not where the face is
    bad = trial_bundle(
        keys, tmp_path / "b-gold", short_range_model, 2, {"golden": wrong}, empty, photo
    )
    dep, code, finished, state = deploy(mosquitto, watch, bad)
    assert code == 1
    assert (state["status"], state["reason"]) == ("failed", "golden_mismatch"), state
    assert "golden case astronaut" in state["detail"]
    assert "installing" in [d["status"] for _, d in watch.ops(dep)]
    slot = update_status(cfg, capsys)["slots"]["detector"]
    assert not slot["active"], "nothing may be activated before the golden cases pass"
    assert slot["last_result"]["reason"] == "golden_mismatch"
    assert serving(sup) == before
    keeps_detecting(watch, finished)


def test_shadow_disagreement_rolls_back_with_figures(
    *, daemon: Daemon, mosquitto: MosquittoBroker, keys: Path, tmp_path: Path
) -> None:
    sup, _cfg, watch = daemon
    before = serving(sup)
    # Another real face model; boxes must agree at IoU 0.95 on every frame: it cannot.
    back = require_asset("models/face_detection_back.tflite")
    shadow = {"min_agreement_permille": 1000, "iou_min_permille": 950, "min_frames": 60}
    bad = trial_bundle(keys, tmp_path / "b-shadow", back, 2, {"shadow": shadow})
    dep, code, finished, state = deploy(mosquitto, watch, bad)
    assert code == 1
    assert (state["status"], state["reason"]) == ("failed", "shadow_disagreement"), state
    assert state["outcome"] == "rolled_back"
    figures = state["shadow"]
    assert figures["frames_compared"] == 60
    assert figures["agreement"] < 1.0
    assert figures["reference_per_frame"] > 0, "the serving model saw faces meanwhile"
    # The serving model served throughout: it was never swapped for the candidate.
    assert serving(sup) == before
    started = watch.ops(dep)[0][0]
    assert any(started <= t <= finished for t, _ in watch.detections())
    keeps_detecting(watch, finished)


def test_good_candidate_with_golden_and_shadow_commits(
    *,
    daemon: Daemon,
    mosquitto: MosquittoBroker,
    keys: Path,
    tmp_path: Path,
    short_range_model: Path,
    images_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sup, cfg, watch = daemon
    photo = images_dir / "astronaut.png"
    trial = {
        "golden": golden(short_range_model, photo),
        "shadow": {
            "min_agreement_permille": 900,
            "max_rate_change_permille": 100,
            "min_frames": 20,
        },
    }
    good = trial_bundle(keys, tmp_path / "b-good", short_range_model, 2, trial, photo)
    dep, code, _, state = deploy(mosquitto, watch, good)
    assert code == 0, watch.ops(dep)[-3:]
    assert state["status"] == "successful"
    figures = state["shadow"]
    assert figures["frames_compared"] == 20
    assert figures["agreement"] == 1.0
    assert figures["rate_change"] == 0.0
    slot = update_status(cfg, capsys)["slots"]["detector"]
    assert slot["active"]["manifest_version"] == 2
    assert str(tmp_path / "state") in serving(sup)
