"""OpenCV-backed sources for each scheme of CONTRACT §2.1, and the pure helpers that build them."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from agent.capture.base import Pacer, Source
from agent.config.board import BoardConfig
from agent.config.camera import CameraConfig
from agent.errors import CaptureError, SourceOpenError, SourceSpecError
from agent.log import get_logger

log = get_logger(__name__)

SourceKind = Literal["file", "images", "v4l2", "rtsp", "gst", "csi"]
APPSINK = "appsink drop=true max-buffers=1 sync=false"
FFMPEG_LOW_LATENCY = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
_ENV_LOCK = threading.Lock()


def _as_u8(image: object) -> npt.NDArray[np.uint8]:
    # OpenCV decodes 8-bit BGR for every source used here; its stubs say "Mat | ndarray".
    return cast("npt.NDArray[np.uint8]", image)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    kind: SourceKind
    target: str  # path, device, URL or GStreamer pipeline


def parse_source(camera: CameraConfig, board: BoardConfig) -> SourceSpec:
    """Turn the config's source string into what to open (pure)."""
    source = camera.source

    def bad(why: str) -> SourceSpecError:
        return SourceSpecError(f"{why}: {source!r}", camera=camera.name, source=source)

    if source.startswith(("rtsp://", "rtsps://")):
        return SourceSpec("rtsp", source)
    scheme, sep, rest = source.partition(":")
    if not sep or not rest:
        raise bad("source needs SCHEME:TARGET")
    if scheme in ("file", "images", "v4l2"):
        return SourceSpec(scheme, rest)  # type: ignore[arg-type] # narrowed by the tuple test
    if scheme == "gst":
        return SourceSpec("gst", ensure_appsink(rest))
    if scheme == "csi":
        if not rest.isdigit():
            raise bad("csi: takes a sensor number")
        if not board.csi_pipeline:
            raise bad(f"board profile {board.name!r} has no csi_pipeline template for")
        pipeline = board.csi_pipeline.format(
            sensor_id=int(rest),
            width=camera.width or board.csi_width,
            height=camera.height or board.csi_height,
            fps=round(camera.fps),
        )
        return SourceSpec("csi", ensure_appsink(pipeline))
    raise bad("unknown source scheme")


def ensure_appsink(pipeline: str) -> str:
    """End the pipeline in an appsink that drops and keeps one buffer (no unbounded queue)."""
    elements = [part.strip() for part in pipeline.strip().split("!")]
    if elements and elements[-1].split(" ", 1)[0] == "appsink":
        elements.pop()
    return " ! ".join([*elements, APPSINK])


def ffmpeg_open_params(open_timeout_s: float, read_timeout_s: float) -> list[int]:
    """Open params that only take effect with an explicit CAP_FFMPEG backend."""
    return [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(read_timeout_s * 1000),
    ]


class VideoCaptureSource:
    """A cv2.VideoCapture; file sources are paced to their fps (or flat-out) and may loop.

    ``live_camera`` marks a network stream: once one of its reads fails (the server
    closed, or the read timed out) OpenCV's FFmpeg capture never delivers again, so
    ``read()`` raises CaptureError and the capture thread reopens at once instead of
    retrying a dead capture until the stall timeout.
    """

    def __init__(
        self,
        cap: cv2.VideoCapture,
        *,
        fps: float,
        paced: bool,
        loop: bool,
        rewindable: bool,
        live_camera: CameraConfig | None = None,
    ) -> None:
        self._cap = cap
        self._live_camera = live_camera
        self._fps = fps
        self._pacer = Pacer(1.0 / fps if paced and fps > 0 else 0.0)
        self._loop = loop and rewindable
        self._finite = rewindable
        self._ended = False

    @property
    def nominal_fps(self) -> float:
        return self._fps

    @property
    def ended(self) -> bool:
        return self._ended

    def _grab(self) -> npt.NDArray[np.uint8] | None:
        ok, image = self._cap.read()
        if ok:
            return _as_u8(image)
        if self._loop and self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            ok, image = self._cap.read()
            if ok:
                return _as_u8(image)
        if self._finite:
            self._ended = True
        if self._live_camera is not None:
            camera = self._live_camera
            raise CaptureError(
                f"camera {camera.name}: stream lost", camera=camera.name, source=camera.source
            )
        return None

    def read(self) -> npt.NDArray[np.uint8] | None:
        if self._ended:
            return None
        self._pacer.wait()
        return self._grab()

    def release(self) -> None:
        self._cap.release()


class ImageDirSource:
    """Every image of a directory in name order, at the camera's fps."""

    def __init__(self, files: list[Path], fps: float, paced: bool, loop: bool) -> None:
        self._files = files
        self._fps = fps
        self._pacer = Pacer(1.0 / fps if paced else 0.0)
        self._loop = loop
        self._index = 0
        self._ended = False

    @property
    def nominal_fps(self) -> float:
        return self._fps

    @property
    def ended(self) -> bool:
        return self._ended

    def read(self) -> npt.NDArray[np.uint8] | None:
        if self._index >= len(self._files):
            if not self._loop:
                self._ended = True
                return None
            self._index = 0
        self._pacer.wait()
        path = self._files[self._index]
        self._index += 1
        # None on an unreadable file, which the capture thread treats as a failed read.
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return None if image is None else _as_u8(image)

    def release(self) -> None:
        self._index = len(self._files)


def _open_ffmpeg(target: str, params: list[int], options: str | None) -> cv2.VideoCapture:
    """Open through FFmpeg with OPENCV_FFMPEG_CAPTURE_OPTIONS = ``options`` for this open only.

    OpenCV reads the variable at open time and it is process-wide: the low-latency RTSP
    flags must not reach a file open (``fflags;nobuffer`` loses a file's first frame), so
    every FFmpeg open holds the lock and the variable is removed again after an RTSP open.
    An operator's own value wins and stays. OpenCV serializes FFmpeg opens behind its own
    mutex anyway, so the lock costs no concurrency.
    """
    with _ENV_LOCK:
        ours = options is not None and FFMPEG_OPTIONS_ENV not in os.environ
        if ours:
            os.environ[FFMPEG_OPTIONS_ENV] = str(options)
        try:
            if not params:
                return cv2.VideoCapture(target)  # file: OpenCV picks the backend
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        finally:
            if ours:
                os.environ.pop(FFMPEG_OPTIONS_ENV, None)


def _open_capture(camera: CameraConfig, spec: SourceSpec) -> cv2.VideoCapture:
    if spec.kind == "file":
        return _open_ffmpeg(spec.target, [], None)
    if spec.kind == "v4l2":
        cap = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
        # One buffered frame: a slow reader must get the newest frame, not a stale queue.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if camera.width and camera.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, camera.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, camera.height)
        cap.set(cv2.CAP_PROP_FPS, camera.fps)
        return cap
    if spec.kind == "rtsp":
        # A read that times out leaves the capture dead for good, so it times out only
        # when the stall is due: a quiet gap shorter than stall_timeout_s keeps the stream.
        params = ffmpeg_open_params(camera.open_timeout_s, camera.stall_timeout_s)
        return _open_ffmpeg(spec.target, params, FFMPEG_LOW_LATENCY)
    return cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)


def v4l2_node_problem(node: str) -> str:
    """Why a V4L2 device node cannot be opened, before OpenCV says only that it cannot."""
    path = Path(node)
    if not path.exists():
        return f"no such device {node} (is the camera plugged in? see `ls /dev/video*`)"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"no permission to open {node} (add the service user to the video group)"
    return ""


def open_source(camera: CameraConfig, board: BoardConfig, *, paced: bool = True) -> Source:
    spec = parse_source(camera, board)

    def failed(why: str) -> SourceOpenError:
        return SourceOpenError(
            f"camera {camera.name}: {why}", camera=camera.name, source=camera.source
        )

    if spec.kind == "images":
        directory = Path(spec.target)
        if not directory.is_dir():
            raise failed(f"no such directory {directory}")
        files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise failed(f"no images in {directory}")
        return ImageDirSource(files, camera.fps, paced, camera.loop)
    if spec.kind == "file" and not Path(spec.target).is_file():
        raise failed(f"no such file {spec.target}")
    if spec.kind == "v4l2":
        problem = v4l2_node_problem(spec.target)
        if problem:
            raise failed(problem)
    try:
        cap = _open_capture(camera, spec)
    except cv2.error as exc:
        raise failed(f"OpenCV refused the source: {exc}") from exc
    if not cap.isOpened():
        cap.release()
        # The device node is named; an RTSP URL may hold a password and is not.
        where = f" {spec.target}" if spec.kind in ("v4l2", "file") else ""
        raise failed(f"cannot open {spec.kind} source{where}")
    reported_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = reported_fps if spec.kind == "file" and 0 < reported_fps <= 240 else camera.fps
    log.info("source_opened", camera=camera.name, kind=spec.kind, fps=round(fps, 2))
    return VideoCaptureSource(
        cap,
        fps=fps,
        paced=paced and spec.kind == "file",
        loop=camera.loop,
        rewindable=spec.kind == "file",
        live_camera=camera if spec.kind == "rtsp" else None,
    )
