"""ONNX Runtime backend with real PaddleOCR models from the rapidocr-onnxruntime wheel."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from agent.assets import find_asset
from agent.errors import BackendUnavailableError, InferenceError, ModelLoadError
from agent.inference.backends.onnx import CPU, OnnxBackend, choose_providers
from agent.inference.registry import BackendOptions, create_backend

CLS_MODEL = "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
DET_MODEL = "models/ch_PP-OCRv4_det_infer.onnx"


def model(relative: str) -> Path:
    path = find_asset(relative)
    assert path is not None, f"{relative} missing: run tools/fetch_assets.py"
    return path


def text_crop(text: str) -> np.ndarray:
    """A 48x192 BGR crop with dark text on white, as a text detector would cut it out."""
    image = np.full((48, 192, 3), 255, dtype=np.uint8)
    cv2.putText(image, text, (4, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    return image


def to_cls_input(bgr: np.ndarray, out: np.ndarray) -> np.ndarray:
    # PaddleOCR's cls preprocessing: BGR, scaled to [-1, 1], CHW.
    out[0] = (bgr.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)
    return out


@pytest.fixture(scope="module")
def classifier() -> OnnxBackend:
    backend = OnnxBackend(model(CLS_MODEL), BackendOptions(threads=1, input_size=(48, 192)))
    yield backend
    backend.close()


def test_classifier_specs_from_a_dynamic_model(classifier: OnnxBackend) -> None:
    spec = classifier.input_spec
    assert spec.tensor.name == "x"
    assert spec.tensor.shape == (1, 3, 48, 192)
    assert spec.tensor.dtype == np.float32
    assert spec.layout == "nchw"
    assert (spec.height, spec.width) == (48, 192)
    (out,) = classifier.output_specs
    assert out.shape == (1, 2)
    assert out.dtype == np.float32
    assert classifier.runtime.name == "onnxruntime"
    assert classifier.runtime.version == ort.__version__
    assert classifier.runtime.device == "cpu"
    assert classifier.runtime.extra == {"providers": CPU, "threads": "1"}


@pytest.mark.parametrize("text", ["Hello World", "INVOICE 2026", "camera door"])
def test_classifier_matches_onnxruntime_and_sees_upside_down_text(
    classifier: OnnxBackend, text: str
) -> None:
    reference = ort.InferenceSession(str(model(CLS_MODEL)), providers=[CPU])
    crop = text_crop(text)
    for image, expected_class in ((crop, 0), (cv2.rotate(crop, cv2.ROTATE_180), 1)):
        tensor = to_cls_input(image, classifier.input_buffer())
        (probs,) = classifier.infer(tensor)
        (want,) = reference.run(None, {"x": tensor})
        np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
        assert int(np.argmax(probs[0])) == expected_class
        assert probs[0, expected_class] > 0.9


def test_results_are_owned_by_the_caller(classifier: OnnxBackend) -> None:
    buffer = to_cls_input(text_crop("edge agent"), classifier.input_buffer())
    (first,) = classifier.infer(buffer)
    kept = first.copy()
    first[:] = -1.0
    to_cls_input(cv2.rotate(text_crop("edge agent"), cv2.ROTATE_180), buffer)
    (second,) = classifier.infer(buffer)
    assert not np.shares_memory(second, buffer)
    assert int(np.argmax(second[0])) == 1
    (again,) = classifier.infer(to_cls_input(text_crop("edge agent"), buffer))
    np.testing.assert_allclose(again, kept, rtol=1e-6)


def test_wrong_input_is_an_inference_error(classifier: OnnxBackend) -> None:
    with pytest.raises(InferenceError, match="model wants"):
        classifier.infer(np.zeros((1, 3, 32, 192), dtype=np.float32))
    with pytest.raises(InferenceError, match="model wants"):
        classifier.infer(np.zeros((1, 3, 48, 192), dtype=np.float64))


def test_detector_probability_map_marks_drawn_text() -> None:
    backend = create_backend(
        "onnx", model(DET_MODEL), BackendOptions(threads=2, input_size=(320, 320))
    )
    try:
        assert backend.input_spec.tensor.shape == (1, 3, 320, 320)
        assert backend.output_specs[0].shape == (1, 1, 320, 320)
        image_path = find_asset("images/coffee.png")
        assert image_path is not None
        image = cv2.resize(cv2.imread(str(image_path)), (320, 320))
        cv2.rectangle(image, (20, 130), (300, 190), (255, 255, 255), -1)
        cv2.putText(image, "TEXT HERE", (30, 175), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (0, 0, 0), 3)
        rgb = image[:, :, ::-1].astype(np.float32) / 255.0
        mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
        std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
        buffer = backend.input_buffer()
        buffer[0] = ((rgb - mean) / std).transpose(2, 0, 1)
        (prob,) = backend.infer(buffer)
        text_band = prob[0, 0, 140:185, 30:290].mean()
        elsewhere = np.concatenate([prob[0, 0, :120].ravel(), prob[0, 0, 200:].ravel()]).mean()
        assert text_band > 0.05
        assert elsewhere < 0.01
    finally:
        backend.close()


def test_dynamic_size_defaults_when_options_give_none() -> None:
    backend = OnnxBackend(model(CLS_MODEL), BackendOptions(threads=1))
    assert backend.input_spec.tensor.shape == (1, 3, 640, 640)
    backend.close()
    with pytest.raises(InferenceError, match="closed"):
        backend.infer(np.zeros((1, 3, 640, 640), dtype=np.float32))


def test_missing_and_corrupt_models_are_model_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        OnnxBackend(tmp_path / "absent.onnx", BackendOptions())
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(model(CLS_MODEL).read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match=r"refused corrupt\.onnx"):
        OnnxBackend(corrupt, BackendOptions())


def test_missing_onnxruntime_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailableError, match=r"edge-agent\[onnx\]"):
        OnnxBackend(model(CLS_MODEL), BackendOptions())


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        ((), [CPU], [CPU]),
        (("cuda",), ["CUDAExecutionProvider", CPU], ["CUDAExecutionProvider", CPU]),
        (("tensorrt", "cuda"), [CPU], [CPU]),
        (
            ("auto",),
            [CPU, "CUDAExecutionProvider", "TensorrtExecutionProvider"],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU],
        ),
        (
            ("cpu", "CUDAExecutionProvider", "cuda"),
            ["CUDAExecutionProvider", CPU],
            ["CUDAExecutionProvider", CPU],
        ),
    ],
)
def test_choose_providers(requested, available, expected) -> None:
    assert choose_providers(requested, available) == expected


def test_unavailable_provider_falls_back_to_cpu_with_a_warning(log_events) -> None:
    backend = OnnxBackend(
        model(CLS_MODEL), BackendOptions(providers=("cuda",), input_size=(48, 192))
    )
    assert backend.runtime.extra["providers"] == CPU
    assert any(e["event"] == "onnx_provider_unavailable" for e in log_events)
    backend.close()
