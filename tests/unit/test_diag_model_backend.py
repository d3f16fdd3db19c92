"""`diag`'s model check picks the backend as the pipeline does: an .onnx file in a slot
with no ``backend`` key is run by ONNX Runtime, not the board's default TFLite runtime."""

from __future__ import annotations

from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.diag.inference import check_model_local
from agent.pipeline.model import resolve_backend
from tests.conftest import require_asset


def test_onnx_model_without_backend_key_is_checked_with_onnx_runtime() -> None:
    onnx = require_asset("models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    model = ModelConfig(slot="direction", path=str(onnx), decoder="classify")
    cfg = AgentConfig(models=[model])
    assert cfg.backend_for(model) == "tflite"  # the board default, which cannot read it
    assert resolve_backend(cfg, model, onnx) == "onnx"
    result = check_model_local(cfg, model)
    assert result.status.value == "ok", result
    assert "onnx" in result.detail.lower(), result


def test_configured_backend_still_wins(short_range_model) -> None:
    model = ModelConfig(slot="detector", path=str(short_range_model), backend="onnx")
    assert resolve_backend(AgentConfig(models=[model]), model, short_range_model) == "onnx"
