"""Pure pieces of "bring your own model": backend sniffing, decoder fit, output kind, input plan."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config.model import ModelConfig
from agent.errors import DecoderError, DecoderMismatchError, Reason
from agent.inference.adapt import Affine, ModelHints, plan_input
from agent.inference.base import InputSpec, TensorSpec
from agent.inference.decoders.classify import output_kind, probabilities
from agent.inference.decoders.fit import check_fit, fitting_families
from agent.inference.metadata import onnx_hints, sniff_backend
from agent.inference.preprocess import Preprocessor
from agent.pipeline.faults import DECODER_FAILURE_LIMIT, SlotFaults, slot_health


def spec(
    shape: tuple[int, ...],
    dtype: type = np.float32,
    scale: float = 0.0,
    zp: int = 0,
    name: str = "t",
) -> TensorSpec:
    return TensorSpec(name, shape, np.dtype(dtype), scale, zp)


IMAGE = InputSpec(spec((1, 300, 300, 3), np.uint8, 1 / 128, 128), "nhwc")
# The four outputs of TFLite_Detection_PostProcess (the TF detection zoo's SSD exports).
SSD_OUTPUTS = [
    spec((1, 10, 4), name="TFLite_Detection_PostProcess"),
    spec((1, 10), name="TFLite_Detection_PostProcess:1"),
    spec((1, 10), name="TFLite_Detection_PostProcess:2"),
    spec((1,), name="TFLite_Detection_PostProcess:3"),
]


@pytest.mark.parametrize(
    ("head", "suffix", "backend"),
    [
        (b"\x1c\x00\x00\x00TFL3\x00\x00\x00\x00\x00\x00\x00\x00", ".onnx", "tflite"),
        (b"\x08\x07\x12\x07pytorch\x1a\x00", ".tflite", "onnx"),
        (b"ftrt\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", ".bin", "tensorrt"),
        (b"# edge-agent\n\n[[models]]", ".md", None),
        (b"\x00" * 16, ".engine", "tensorrt"),
    ],
)
def test_backend_from_magic_bytes_before_suffix(
    head: bytes, suffix: str, backend: str | None
) -> None:
    assert sniff_backend(head, suffix) == backend


def test_ssd_outputs_fit_only_ssd_postprocess() -> None:
    assert fitting_families(IMAGE, SSD_OUTPUTS) == ["ssd_postprocess"]
    with pytest.raises(DecoderMismatchError) as caught:
        check_fit("yolo", IMAGE, SSD_OUTPUTS, model="detect.tflite")
    assert caught.value.fits == ["ssd_postprocess"]
    assert caught.value.data["reason"] == Reason.DECODER_MISMATCH.value
    assert "TFLite_Detection_PostProcess:3 float32[1]" in caught.value.outputs


def test_ssd_with_mismatched_detection_counts_does_not_fit() -> None:
    outputs = [*SSD_OUTPUTS[:2], spec((1, 25)), SSD_OUTPUTS[3]]
    assert fitting_families(IMAGE, outputs) == []


@pytest.mark.parametrize(
    ("out", "configured", "kind"),
    [
        (spec((1, 1001), np.uint8, 1 / 256, 0), "auto", "probabilities"),
        (spec((1, 10), np.int8, 1 / 256, -128), "auto", "probabilities"),
        (spec((1, 1001), np.uint8, 0.1, 60), "auto", "auto"),
        (spec((1, 1001)), "auto", "auto"),
        (spec((1, 1001), np.uint8, 1 / 256, 0), "logits", "logits"),
    ],
)
def test_output_kind(out: TensorSpec, configured: str, kind: str) -> None:
    assert output_kind(out, configured) == kind  # type: ignore[arg-type]


def test_probabilities_are_not_softmaxed_again() -> None:
    # A dequantised uint8 softmax rarely sums to exactly 1: with the kind known it is kept.
    raw = np.zeros(1001, np.float32)
    raw[[3, 7]] = [0.5, 0.42]
    assert probabilities(raw, "probabilities")[3] == pytest.approx(0.5)
    assert probabilities(raw, "auto")[3] < 0.01  # what the per-frame guess did


def test_plan_precedence_config_then_metadata_then_family_default() -> None:
    float_input = InputSpec(spec((1, 3, 320, 320)), "nchw")
    hints = onnx_hints({"author": "Ultralytics", "imgsz": "[320, 320]", "names": "{0: 'a'}"})
    assert hints.labels == {0: "a"}
    assert hints.input_size == (320, 320)
    plan = plan_input(ModelConfig(decoder="yolo"), float_input, hints)
    assert plan.resize_mode == "letterbox"
    assert plan.affine == Affine.uniform(1 / 255, 0.0)
    assert plan.sources == {"resize_mode": "default for yolo", "normalisation": "model metadata"}
    configured = ModelConfig(decoder="yolo", input_range="imagenet", resize_mode="squash")
    plan = plan_input(configured, float_input, hints)
    assert plan.resize_mode == "squash"
    assert plan.sources["normalisation"] == "config imagenet"
    assert (
        plan_input(ModelConfig(decoder="classify"), float_input, ModelHints()).resize_mode
        == "squash"
    )


def test_mean_std_on_a_quantised_input_is_folded_into_the_quantisation() -> None:
    """A uint8 input quantised as -1..1 (scale 1/128, zero point 128) given mean/std 0.5."""
    affine = Affine.from_mean_std([0.5], [0.5], 1 / 255)
    pre = Preprocessor(IMAGE, "squash", "rgb", channel_affine=(affine.scale, affine.offset))
    out = np.zeros(IMAGE.tensor.shape, np.uint8)
    pre.prepare(np.full((300, 300, 3), 255, np.uint8), out)
    assert int(out.max()) == 255  # real 1.0 → 1.0 * 128 + 128, clipped
    pre.prepare(np.zeros((300, 300, 3), np.uint8), out)
    assert int(out.max()) == 0  # real -1.0 → 0


def test_per_channel_mean_std_on_float_input() -> None:
    float_input = InputSpec(spec((1, 3, 4, 4)), "nchw")
    affine = Affine.from_mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 1 / 255)
    pre = Preprocessor(float_input, "squash", "rgb", channel_affine=(affine.scale, affine.offset))
    out = np.zeros(float_input.tensor.shape, np.float32)
    pre.prepare(np.full((8, 8, 3), 255, np.uint8), out)
    expected = [
        (1 - m) / s for m, s in zip([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], strict=True)
    ]
    assert out[0, :, 0, 0] == pytest.approx(expected, rel=1e-5)


def test_decoder_failures_take_the_slot_down_after_the_limit_and_one_frame_clears_it() -> None:
    faults = SlotFaults("faces", "blazeface")
    for _ in range(DECODER_FAILURE_LIMIT - 1):
        faults.failed(DecoderError("bad outputs"), "postprocess")
    assert slot_health(stuck_running_s=None, serving="m on r", faults=faults, restarts=0)[0] == "ok"
    faults.failed(DecoderError("bad outputs"), "postprocess")
    status, detail = slot_health(stuck_running_s=None, serving="m on r", faults=faults, restarts=0)
    assert status == "down"
    assert detail.startswith("decoder_mismatch: ")
    assert faults.decoder_fault is not None
    assert faults.decoder_fault.reason is Reason.DECODER_MISMATCH
    faults.decoded()
    assert faults.decoder_fault is None
    assert slot_health(stuck_running_s=None, serving="m on r", faults=faults, restarts=0)[0] == "ok"


def test_worked_configs_in_docs_validate(tmp_path) -> None:
    import re
    from pathlib import Path

    from agent.config import load_config

    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 5
    for i, block in enumerate(blocks):
        path = tmp_path / f"{i}.toml"
        path.write_text(block, encoding="utf-8")
        assert load_config(path).config.models
