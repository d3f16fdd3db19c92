"""Camera sources and the capture thread.

``open_source`` imports OpenCV only when called, so the base install (diag,
validate-config) imports this package without OpenCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.errors import SourceOpenError

if TYPE_CHECKING:
    from agent.capture.base import Source
    from agent.config.board import BoardConfig
    from agent.config.camera import CameraConfig


def open_source(camera: CameraConfig, board: BoardConfig, *, paced: bool = True) -> Source:
    """Open the camera's source; raises SourceOpenError or SourceSpecError.

    ``paced=False`` reads file: sources flat-out (benchmarks) instead of at their fps.
    """
    try:
        from agent.capture import sources  # noqa: PLC0415 - OpenCV is an optional extra
    except ImportError as exc:
        raise SourceOpenError(
            f"OpenCV is not installed: {exc}", camera=camera.name, source=camera.source
        ) from exc
    return sources.open_source(camera, board, paced=paced)
