"""Issue 17.7: a V4L2 camera that cannot be opened is named by its device node."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.capture.sources import open_source
from agent.config.board import BoardConfig
from agent.config.camera import CameraConfig
from agent.errors import SourceOpenError


def test_missing_node_is_named(tmp_path: Path):
    node = tmp_path / "video7"
    camera = CameraConfig(name="door", source=f"v4l2:{node}")
    with pytest.raises(SourceOpenError, match=f"camera door: no such device {node}"):
        open_source(camera, BoardConfig())


def test_a_node_opencv_refuses_is_named(tmp_path: Path):
    node = tmp_path / "not-a-camera"
    node.write_bytes(b"")
    camera = CameraConfig(name="door", source=f"v4l2:{node}")
    with pytest.raises(SourceOpenError, match=f"cannot open v4l2 source {node}"):
        open_source(camera, BoardConfig())
