"""``edge-fleet bundle create --golden DIR --shadow-min-agreement F`` on the real sample model,
and ``edge-fleet status`` showing a trial's shadow figures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.fleet.cli import main
from agent.fleet.fleetview import device_row, render_lines
from agent.fleet.keys import init_keys
from agent.update.store.bundle import read_manifest
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import parse_manifest
from agent.update.trust.trialspec import ExpectedDetection, ShadowSpec
from agent.update.trust.verify import MAX_ENVELOPE_BYTES


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


def create(model: Path, keys: Path, out: Path, *extra: str) -> int:
    base = ["bundle", "create", "--model", str(model), "--slot", "detector", "--fleet", "f1"]
    base += ["--manifest-version", "2", "--release", "2", "--keys", str(keys), "--out", str(out)]
    return main([*base, *extra])


def test_golden_expected_results_are_computed_printed_and_signed(
    *,
    tmp_path: Path,
    keys: Path,
    short_range_model: Path,
    images_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    golden = tmp_path / "golden"
    golden.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        shutil.copy(images_dir / name, golden / name)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[[models]]\nslot = "detector"\npath = "{short_range_model}"\nthreshold = 0.5\n'
    )
    out = tmp_path / "bundle"
    flags = ["--golden", str(golden), "--golden-config", str(config), "--golden-iou", "0.6"]
    flags += ["--shadow-min-agreement", "0.9", "--shadow-min-frames", "30"]
    assert create(short_range_model, keys, out, *flags) == 0
    printed = capsys.readouterr().out
    assert "golden astronaut (astronaut.png): 1 detections" in printed
    assert "golden coffee (coffee.png): 0 detections" in printed
    manifest = parse_manifest(parse_envelope(read_manifest(out), MAX_ENVELOPE_BYTES).payload)
    assert {f.name for f in manifest.files} >= {"astronaut.png", "coffee.png"}
    assert (out / "astronaut.png").read_bytes() == (images_dir / "astronaut.png").read_bytes()
    face, nothing = manifest.trial.golden
    assert face.iou_min == 0.6
    assert face.detections is not None
    assert len(face.detections) == 1
    found = face.detections[0]
    assert isinstance(found, ExpectedDetection)
    assert found.label == "face"
    assert found.score > 0.8
    assert f"box {[round(v) for v in found.box]}" in printed
    assert nothing.detections == ()
    assert manifest.trial.shadow == ShadowSpec(min_agreement=0.9, min_frames=30)


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (["--golden", "{empty}"], "0 images"),
        (["--golden", "{missing}"], "not a directory"),
        (["--golden-config", "{config}"], "--golden-config needs --golden"),
        (["--shadow-min-frames", "5"], "need --shadow-min-agreement"),
        (["--shadow-min-agreement", "1.5"], "within 0..1"),
    ],
)
def test_bad_trial_flags_are_refused_before_anything_is_written(
    *,
    tmp_path: Path,
    keys: Path,
    short_range_model: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    why: str,
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "agent.toml").write_text("")
    paths = {"empty": tmp_path / "empty", "missing": tmp_path / "nope"}
    paths["config"] = tmp_path / "agent.toml"
    filled = [f.format(**paths) for f in flags]
    out = tmp_path / "bundle"
    assert create(short_range_model, keys, out, *filled) != 0
    assert why in capsys.readouterr().err
    assert not (out / "manifest.json").exists()


def test_fleet_status_shows_the_shadow_figures_of_the_last_op() -> None:
    shadow = {"frames_compared": 60, "agreement": 0.1333, "rate_change": 0.3968}
    op = {"status": "failed", "reason": "shadow_disagreement", "ts": 100.0, "shadow": shadow}
    row = device_row("cam-001", {"ops": {"model_update/f1-detector-2": op}})
    assert row["operation"]["shadow"] == shadow
    line = render_lines([row], now_s=110.0)[-1]
    assert "model_update/f1-detector-2 failed (shadow_disagreement)" in line
    assert "[shadow 60 frames, agreement 0.1333, rate change 0.3968]" in line
    plain = device_row("cam-002", {"ops": {"model_update/x": {**op, "shadow": None}}})
    assert "shadow" not in plain["operation"]
    assert "[shadow" not in render_lines([plain], now_s=110.0)[-1]
