"""Where sample assets and the files shipped with the package live.

Three kinds:
- the checkout's assets/ (every model, photo and clip tools/fetch_assets.py fetches);
- agent/samples/ inside the package: the BlazeFace model and three photographs, so an
  installed ``edge-agent demo`` needs nothing else (it renders its clip from them once,
  into the user's cache);
- firmware_profiles/ and systemd/, top level in the checkout, copied into the wheel as
  agent/_packaged/ at build time (setup.py).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from agent.errors import SourceOpenError

ASSETS_ENV = "EDGE_AGENT_ASSETS"
CACHE_ENV = "EDGE_AGENT_CACHE_DIR"
PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = PACKAGE_DIR / "samples"
PACKAGED_DIR = PACKAGE_DIR / "_packaged"
CHECKOUT_DIR = PACKAGE_DIR.parent
SAMPLE_CLIP = "clips/sample.mp4"
SAMPLE_MODEL = "models/face_detection_short_range.tflite"
# Reason codes on SourceOpenError.data["reason"] for a sample that cannot be had.
REASON_SAMPLE_MISSING = "sample_missing"
REASON_SAMPLE_BUILD_FAILED = "sample_build_failed"


def asset_dirs() -> list[Path]:
    dirs: list[Path] = []
    if env := os.environ.get(ASSETS_ENV):
        dirs.append(Path(env))
    dirs += [
        CHECKOUT_DIR / "assets",  # source checkout
        Path(sys.prefix) / "share/edge-agent",
        Path("/usr/share/edge-agent"),
        SAMPLES_DIR,  # shipped in the wheel
    ]
    return dirs


def find_asset(relative: str) -> Path | None:
    """``find_asset("models/face_detection_short_range.tflite")`` → first existing match."""
    for directory in asset_dirs():
        candidate = directory / relative
        if candidate.exists():
            return candidate
    return None


def shipped_dir(name: str) -> Path | None:
    """``firmware_profiles`` or ``systemd``: the copy in the wheel, else the checkout's."""
    for candidate in (PACKAGED_DIR / name, CHECKOUT_DIR / name):
        if candidate.is_dir():
            return candidate
    return None


def cache_dir() -> Path:
    """$EDGE_AGENT_CACHE_DIR, else the XDG cache; a private temp dir when that is not writable."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env)
    try:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        preferred = Path(xdg) / "edge-agent"
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except (OSError, RuntimeError):  # RuntimeError: no home directory at all
        pass
    # Per user and 0700: another user cannot plant a clip here.
    private = Path(tempfile.gettempdir()) / f"edge-agent-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    return private


def _packaged_clip_key(images: Path) -> str:
    from agent.sample_clip import FPS, HEIGHT, PACKAGED_SEGMENTS, WIDTH  # noqa: PLC0415

    digest = hashlib.sha256(repr((PACKAGED_SEGMENTS, FPS, WIDTH, HEIGHT)).encode())
    for name in sorted({segment.photo for segment in PACKAGED_SEGMENTS}):
        digest.update((images / name).read_bytes())
    return digest.hexdigest()[:12]


def sample_clip() -> Path:
    """The checkout's clip when there is one, else the packaged clip (rendered on first use)."""
    if found := find_asset(SAMPLE_CLIP):
        return found
    images = SAMPLES_DIR / "images"
    try:
        # Keyed by the photos and the recipe, so an upgraded package never plays a stale clip.
        clip = cache_dir() / f"sample-{_packaged_clip_key(images)}.avi"
        if not clip.is_file():
            from agent.sample_clip import build_clip  # noqa: PLC0415 - needs OpenCV

            build_clip(images, clip)
    except (OSError, ImportError) as exc:
        raise SourceOpenError(
            f"{REASON_SAMPLE_BUILD_FAILED}: sample clip cannot be built from {images}: {exc}",
            camera="sample",
            source=SAMPLE_CLIP,
            reason=REASON_SAMPLE_BUILD_FAILED,
        ) from exc
    return clip


def sample_asset(relative: str) -> Path:
    """A sample the demo and bench use by default; SourceOpenError when it cannot be had."""
    if relative == SAMPLE_CLIP:
        return sample_clip()
    if found := find_asset(relative):
        return found
    raise SourceOpenError(
        f"{REASON_SAMPLE_MISSING}: sample asset {relative} not found in "
        f"{', '.join(str(d) for d in asset_dirs())}",
        camera="sample",
        source=relative,
        reason=REASON_SAMPLE_MISSING,
    )
