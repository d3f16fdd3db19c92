"""``camera:<name>``: open the source, sample it briefly, judge rate and picture.

With the daemon running the camera is its own; the check then reads the live
stats and health the daemon passes in instead of opening the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.config import BoardConfig, CameraConfig
from agent.diag.bounded import run_bounded
from agent.diag.report import CheckResult, fail, ok, warn
from agent.errors import CaptureError

BLACK_MEAN = 16.0  # mean luma (0-255) below which a frame is black
SATURATED_LEVEL = 250
OVEREXPOSED_FRACTION = 0.5  # share of saturated pixels that makes a frame over-exposed
FPS_WARN_RATIO = 0.8
FPS_FAIL_RATIO = 0.5
MIN_FRAMES_TO_JUDGE = 3


@dataclass
class Sample:
    """What a short read of a source produced."""

    frames: int = 0
    first_s: float = 0.0
    last_s: float = 0.0
    ended: bool = False
    nominal_fps: float = 0.0
    shape: tuple[int, ...] = ()
    identical_pairs: int = 0
    black_frames: int = 0
    overexposed_frames: int = 0
    mean_luma: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        span = self.last_s - self.first_s
        return (self.frames - 1) / span if self.frames > 1 and span > 0 else 0.0


def luma_stats(image: npt.NDArray[np.uint8]) -> tuple[float, float]:
    """(mean luma, share of saturated pixels) on a subsampled grid: cheap and stable enough."""
    grid = image[::4, ::4]
    if grid.ndim == 3 and grid.shape[2] >= 3:
        luma = 0.114 * grid[..., 0] + 0.587 * grid[..., 1] + 0.299 * grid[..., 2]
    else:
        luma = grid.astype(np.float32)
    return float(luma.mean()), float((luma >= SATURATED_LEVEL).mean())


def add_frame(
    sample: Sample,
    image: npt.NDArray[np.uint8],
    previous: npt.NDArray[np.uint8] | None,
    now_s: float,
) -> None:
    if sample.frames == 0:
        sample.first_s = now_s
        sample.shape = tuple(image.shape)
    sample.last_s = now_s
    sample.frames += 1
    if previous is not None and previous.shape == image.shape and np.array_equal(previous, image):
        sample.identical_pairs += 1
    mean, saturated = luma_stats(image)
    sample.mean_luma.append(round(mean, 1))
    sample.black_frames += mean < BLACK_MEAN
    sample.overexposed_frames += saturated > OVEREXPOSED_FRACTION


def judge_sample(  # noqa: PLR0911 - one return per verdict, worst first
    name: str, cfg_fps: float, sample: Sample, window_s: float
) -> CheckResult:
    """Pure decision over a sample; the order is worst first."""
    data: dict[str, Any] = {
        "frames": sample.frames,
        "fps": round(sample.fps, 2),
        "configured_fps": cfg_fps,
        "nominal_fps": round(sample.nominal_fps, 2),
        "shape": list(sample.shape),
        "identical_pairs": sample.identical_pairs,
        "black_frames": sample.black_frames,
        "overexposed_frames": sample.overexposed_frames,
    }
    if sample.frames == 0:
        return fail(
            name,
            f"opened, but no frame in {window_s:.1f} s",
            "check cabling/stream URL; another process may hold the device (daemon running?)",
            **data,
        )
    if sample.frames < MIN_FRAMES_TO_JUDGE:
        return warn(
            name,
            f"only {sample.frames} frame(s) before the source ended",
            "a file: source without loop = true ends; set loop = true for a steady test",
            **data,
        )
    pairs = sample.frames - 1
    if sample.identical_pairs == pairs:
        return fail(
            name,
            f"frozen: {sample.frames} identical frames",
            "the sensor or stream repeats one picture; power-cycle the camera",
            **data,
        )
    if sample.black_frames == sample.frames:
        return fail(
            name,
            f"black: mean luma {max(sample.mean_luma):.0f}/255 in every frame",
            "lens cap or covered lens, no light, or the IR-cut filter stuck",
            **data,
        )
    if sample.overexposed_frames == sample.frames:
        return fail(
            name,
            f"over-exposed: more than {OVEREXPOSED_FRACTION:.0%} of pixels saturated",
            "direct sunlight or a light source in view; check exposure settings",
            **data,
        )
    rate = f"{sample.fps:.1f} fps of {cfg_fps:g} configured ({sample.frames} frames)"
    if sample.fps < FPS_FAIL_RATIO * cfg_fps:
        return fail(
            name,
            f"slow: {rate}",
            "lower fps or resolution, check bandwidth (rtsp) or USB bus load (v4l2)",
            **data,
        )
    odd = []
    if sample.fps < FPS_WARN_RATIO * cfg_fps:
        odd.append(f"below {FPS_WARN_RATIO:.0%} of the configured rate")
    if sample.identical_pairs * 2 > pairs:
        odd.append(f"{sample.identical_pairs} of {pairs} consecutive frames identical")
    if sample.black_frames:
        odd.append(f"{sample.black_frames} black frame(s)")
    if sample.overexposed_frames:
        odd.append(f"{sample.overexposed_frames} over-exposed frame(s)")
    span_s = sample.last_s - sample.first_s
    if sample.ended and span_s < window_s * 0.9:
        odd.append(f"the source ended after {span_s:.1f} s of the {window_s:.1f} s sample")
    if odd:
        return warn(
            name,
            f"{rate}; " + "; ".join(odd),
            "watch the picture; check light, lens and link",
            **data,
        )
    shape = "x".join(str(d) for d in sample.shape[:2][::-1])
    return ok(name, f"{rate}, {shape}, picture looks normal", **data)


def sample_source(camera: CameraConfig, board: BoardConfig, window_s: float) -> Sample:
    """Open the camera and read for ``window_s`` after the first frame. Raises CaptureError."""
    from agent.capture import open_source  # noqa: PLC0415 - OpenCV only when a camera is checked

    source = open_source(camera, board)
    sample = Sample(nominal_fps=source.nominal_fps)
    previous: npt.NDArray[np.uint8] | None = None
    try:
        deadline = time.monotonic() + window_s + camera.open_timeout_s
        while time.monotonic() < deadline:
            try:
                image = source.read()
            except CaptureError:  # a stream lost mid-sample: report what was seen
                image = None
            now = time.monotonic()
            if image is None:
                sample.ended = True
                break
            add_frame(sample, image, previous, now)
            previous = image.copy()
            if now - sample.first_s >= window_s:
                break
    finally:
        source.release()
    return sample


def check_camera_local(camera: CameraConfig, board: BoardConfig, window_s: float) -> CheckResult:
    name = f"camera:{camera.name}"
    # A wedged driver can block read() forever; the check must still come back.
    result = run_bounded(
        f"diag-{name}",
        lambda: sample_source(camera, board, window_s),
        window_s + camera.open_timeout_s + 5.0,
    )
    if result is None:
        return fail(
            name,
            f"{camera.source}: no answer within {window_s + camera.open_timeout_s + 5.0:.0f} s",
            "the driver or stream hangs; power-cycle the camera or check the network",
        )
    if isinstance(result, CaptureError):
        return fail(
            name,
            f"{camera.source}: {result}",
            "check the source string, the device node (ls -l /dev/video*), and the video group",
        )
    if isinstance(result, BaseException):
        raise result
    return judge_sample(name, camera.fps, result, window_s)


def _find(mapping: Any, *keys: str) -> Any:
    """First present key of a dict (the daemon's stats name things its own way)."""
    if not isinstance(mapping, dict):
        return None
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def check_camera_live(camera: CameraConfig, live: dict[str, Any]) -> CheckResult:
    """Judge from the running daemon's stats and health instead of opening the camera."""
    name = f"camera:{camera.name}"
    stats = _find(_find(live.get("stats"), "cameras"), camera.name) or {}
    components = _find(live.get("health"), "components") or {}
    health = _find(components, f"camera/{camera.name}", f"camera:{camera.name}", camera.name)
    state = health.get("status") if isinstance(health, dict) else health
    fps = _find(stats, "capture_fps", "fps")
    data = {"live": True, "stats": stats, "health": health}
    if fps is None and state is None:
        return warn(
            name,
            "the running daemon reports nothing for this camera",
            "check the daemon's log; is the camera listed in its config?",
            **data,
        )
    rate = f"{float(fps):.1f} fps of {camera.fps:g} configured" if fps is not None else "rate n/a"
    if state in ("down", "fail", "failed", "stalled") or (fps is not None and float(fps) <= 0):
        return fail(
            name,
            f"daemon reports {_health_text(health) or 'no frames'}; {rate}",
            "see the daemon log for the camera's last error",
            **data,
        )
    if state in ("degraded", "warn") or (
        fps is not None and float(fps) < FPS_WARN_RATIO * camera.fps
    ):
        return warn(
            name,
            f"daemon reports {_health_text(health) or 'low rate'}; {rate}",
            "check light, lens and link",
            **data,
        )
    return ok(name, f"live: {rate}, {state or 'ok'}", **data)


def _health_text(health: Any) -> str:
    if isinstance(health, dict):
        return (
            f"{health.get('status')} ({health.get('detail')})"
            if health.get("detail")
            else str(health.get("status"))
        )
    return str(health) if health is not None else ""
