"""`update install` offline: a model the slot's decoder cannot read is never committed.

Real keys, bundle, store and models: the sample BlazeFace detector serves the slot, then a
signed bundle carries the PP-OCR text-direction classifier (ONNX) for the same slot. The
runtime runs it happily, so only loading it as the slot runs it (decoder fit) can refuse it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.update.store.probe import OfflineProbe
from agent.update.store.slotmodel import SlotDetectors
from tests.conftest import require_asset
from tests.support.update_fleet import Fleet, install_bundle, make_installer


@pytest.fixture
def fleet(tmp_path: Path, short_range_model: Path) -> Fleet:
    return Fleet(tmp_path / "fleet", short_range_model)


def config(model: Path, slot: str = "detector") -> AgentConfig:
    return AgentConfig(models=[ModelConfig(slot=slot, path=str(model), threshold=0.5)])


def test_offline_install_of_a_model_unfit_for_the_decoder_rolls_back(
    tmp_path: Path, fleet: Fleet, short_range_model: Path
) -> None:
    classifier = require_asset("models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    state = tmp_path / "state"
    probe = OfflineProbe(detectors=SlotDetectors(config(short_range_model)))
    installer = make_installer(state, fleet, probe=probe)
    assert install_bundle(installer, fleet.bundle(manifest_version=1, release=1)).outcome == (
        "committed"
    )
    current = installer.store.current_sha("detector")
    unfit = fleet.bundle(classifier, manifest_version=2, release=2, backend="onnx")
    result = install_bundle(installer, unfit)
    assert result.outcome == "rolled_back", result
    assert result.reason is not None
    assert result.reason.value == "decoder_mismatch"
    assert "blazeface" in (result.detail or "")
    assert installer.store.current_sha("detector") == current  # the detector still serves


def test_a_slot_missing_from_the_config_keeps_the_smoke_trial(
    tmp_path: Path, fleet: Fleet, short_range_model: Path
) -> None:
    # No [[models]] entry for the slot: nothing to check the decoder against, so the
    # runtime smoke trial decides (an operator installing into a slot not yet configured).
    probe = OfflineProbe(detectors=SlotDetectors(config(short_range_model, slot="other")))
    installer = make_installer(tmp_path / "state", fleet, probe=probe)
    result = install_bundle(installer, fleet.bundle(manifest_version=1, release=1))
    assert result.outcome == "committed", result
