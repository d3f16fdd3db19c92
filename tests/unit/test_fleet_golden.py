"""``edge-fleet bundle create --golden DIR --shadow-min-agreement F`` on the real sample model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.fleet.cli import main
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
