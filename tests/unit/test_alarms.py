from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.uplink.alarms import Alarms
from agent.uplink.topics import Topics

TOPICS = Topics("ea/v1", "cam-001")


def test_raise_once_update_and_clear_with_empty_payload(tmp_path: Path) -> None:
    sent: list[tuple[str, bytes]] = []
    alarms = Alarms(TOPICS, lambda t, p: sent.append((t, p)), tmp_path, lambda: 100.0)
    assert alarms.raise_("overheat", "major", "81 C")
    assert not alarms.raise_("overheat", "major", "81 C")  # unchanged: nothing published
    assert alarms.raise_("overheat", "critical", "95 C")
    assert json.loads(sent[-1][1])["since"] == 100.0  # keeps the original start
    assert alarms.clear("overheat")
    assert sent[-1] == (TOPICS.alarm("overheat"), b"")
    assert not alarms.clear("overheat")
    with pytest.raises(ValueError):
        alarms.raise_("a/b", "major", "x")


def test_active_set_survives_restart_and_reconcile_clears_stale(tmp_path: Path) -> None:
    Alarms(TOPICS, lambda t, p: None, tmp_path, lambda: 1.0).raise_(
        "camera_door_down", "major", "x"
    )
    sent: list[tuple[str, bytes]] = []
    after = Alarms(TOPICS, lambda t, p: sent.append((t, p)), tmp_path, lambda: 2.0)
    assert "camera_door_down" in after.snapshot()
    after.reconcile({"disk_low": ("warning", "10 MB")})
    assert (TOPICS.alarm("camera_door_down"), b"") in sent
    assert set(after.snapshot()) == {"disk_low"}
