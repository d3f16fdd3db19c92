"""Sample assets: the packaged photos and model, the clip rendered from them, clear errors."""

from __future__ import annotations

import os

import cv2
import pytest

from agent import assets
from agent.cli.main import main
from agent.errors import SourceOpenError
from agent.sample_clip import FPS, PACKAGED_SEGMENTS, build_clip, frame_count


def test_the_package_ships_its_samples_and_notice():
    assert (assets.SAMPLES_DIR / assets.SAMPLE_MODEL).stat().st_size > 200_000
    for segment in PACKAGED_SEGMENTS:
        assert (assets.SAMPLES_DIR / "images" / segment.photo).is_file()
    notice = (assets.SAMPLES_DIR / "NOTICE").read_text()
    assert "Apache License 2.0" in notice
    assert "CC0" in notice
    assert "public domain" in notice


def test_packaged_clip_is_rendered_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(assets, "find_asset", lambda _relative: None)  # as installed: no clip
    clip = assets.sample_clip()
    assert clip.parent == tmp_path
    assert clip.suffix == ".avi"
    cap = cv2.VideoCapture(str(clip))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == sum(frame_count(s) for s in PACKAGED_SEGMENTS) == round(10 * FPS)
    mtime = clip.stat().st_mtime_ns
    assert assets.sample_clip() == clip  # cached: not rendered again
    assert clip.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [clip.name]  # no temp file left


def test_unreadable_photo_is_a_build_error_with_a_reason(tmp_path, monkeypatch):
    with pytest.raises(OSError, match=r"cannot read .*astronaut\.jpg"):
        build_clip(tmp_path, tmp_path / "out.avi")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(assets, "find_asset", lambda _relative: None)
    monkeypatch.setattr(assets, "SAMPLES_DIR", tmp_path)
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(SourceOpenError) as caught:
        assets.sample_clip()
    assert caught.value.data["reason"] == assets.REASON_SAMPLE_BUILD_FAILED


def test_cache_falls_back_to_a_private_temp_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(assets.CACHE_ENV, raising=False)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    chosen = assets.cache_dir()
    assert chosen == tmp_path / f"edge-agent-{os.getuid()}"
    assert chosen.stat().st_mode & 0o777 == 0o700


def test_missing_sample_and_missing_clip_argument_are_clear(monkeypatch, capsys):
    monkeypatch.setattr(assets, "asset_dirs", list)
    with pytest.raises(SourceOpenError) as caught:
        assets.sample_asset("models/nope.tflite")
    assert caught.value.data["reason"] == assets.REASON_SAMPLE_MISSING
    assert main(["demo", "--clip", "/nonexistent/clip.mp4"]) == 1
    err = capsys.readouterr().err
    assert "sample_missing: /nonexistent/clip.mp4 not found" in err
    assert "Traceback" not in err
