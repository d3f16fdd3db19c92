"""Published snapshots (agent.uplink.snapshots): bounded JPEGs with fresh boxes drawn, retained
on ``<base>/snapshot/<camera>`` as stats-class messages, on the command and every interval."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.clock import SystemClock
from agent.config.allowlist import remote_issues
from agent.config.root import AgentConfig
from agent.config.uplink import OutboxConfig
from agent.errors import CommandError
from agent.events.types import Detection, DetectionEvent
from agent.uplink.classes import MsgClass, OutMessage
from agent.uplink.homeassistant import discovery
from agent.uplink.outbox_store import OutboxStore
from agent.uplink.snapshots import EVENT_FRESH_S, SnapshotPublisher, enabled, render
from agent.uplink.topics import Topics

TOPICS = Topics("ea/v1", "cam-001")
NOW = 1_000_000.0


def frame() -> Any:
    rng = np.random.default_rng(1)
    return rng.integers(0, 80, (480, 640, 3), dtype=np.uint8)  # dark noise: JPEG has work


def event(ts: float, camera: str = "door") -> DetectionEvent:
    return DetectionEvent(
        1, ts, camera, "detector", (Detection("face", 0.9, (100, 100, 300, 300)),)
    )


def green_pixels(jpeg: bytes) -> int:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    b, g, r = image[..., 0].astype(int), image[..., 1].astype(int), image[..., 2].astype(int)
    return int(((g > 180) & (b < 110) & (r < 110)).sum())


def config(**telemetry: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "device": {"id": "cam-001"},
            "cameras": [{"name": "door"}, {"name": "yard"}],
            "telemetry": telemetry,
        }
    )


def test_render_scales_bounds_and_draws_boxes() -> None:
    plain = render(frame(), None, 320, 64 * 1024, 75)
    boxed = render(frame(), event(NOW), 320, 64 * 1024, 75)
    image = cv2.imdecode(np.frombuffer(boxed, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)
    assert green_pixels(plain) == 0
    assert green_pixels(boxed) > 300  # the box's outline, scaled by half
    small = render(frame(), None, 640, 8000, 95)
    assert len(small) <= 8000  # re-encoded smaller / scaled until it fits
    with pytest.raises(CommandError):
        render(frame(), None, 640, 10, 95)


def test_enabled_by_home_assistant_or_an_interval() -> None:
    assert not enabled(config())
    assert enabled(config(snapshot_interval_s=30))
    ha = AgentConfig.model_validate({"mqtt": {"homeassistant": {"enabled": True}}})
    assert enabled(ha)


def make(cfg: AgentConfig, frames: dict[str, Any], now_s: float, stop: threading.Event):
    sent: list[OutMessage] = []
    pub = SnapshotPublisher(cfg, TOPICS, sent.append, frames.get, now_s=lambda: now_s, stop=stop)
    return pub, sent


def test_command_publishes_retained_stats_image_with_fresh_boxes_only() -> None:
    stop = threading.Event()
    pub, sent = make(config(), {"door": frame()}, NOW, stop)
    seen: list[DetectionEvent] = []
    sink = pub.tap(seen.append)
    handler = pub.wrap_command(lambda req: {"camera": req.get("camera", "door"), "bytes": 1})

    sink(event(NOW - EVENT_FRESH_S - 1))  # stale: the object may have gone
    result = handler({})
    assert result["image_topic"] == "ea/v1/d/cam-001/snapshot/door"
    [msg] = sent
    assert (msg.topic, msg.retain, msg.cls, msg.qos) == (
        result["image_topic"],
        True,
        MsgClass.STATS,
        1,
    )
    assert green_pixels(msg.payload) == 0

    sink(event(NOW - 0.5))
    handler({})
    assert green_pixels(sent[-1].payload) > 300
    assert len(seen) == 2  # the tap passes every event on

    assert "image_topic" not in handler({"camera": "yard"})  # no frame yet: nothing published
    assert len(sent) == 2


def test_interval_publishes_every_camera_until_stopped() -> None:
    stop = threading.Event()
    pub, sent = make(config(snapshot_interval_s=0.2), {"door": frame(), "yard": frame()}, NOW, stop)
    pub.start()
    deadline = time.monotonic() + 5
    while len({m.topic for m in sent}) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    pub.join()
    assert {m.topic for m in sent} == {
        "ea/v1/d/cam-001/snapshot/door",
        "ea/v1/d/cam-001/snapshot/yard",
    }


def test_no_interval_no_thread() -> None:
    stop = threading.Event()
    pub, sent = make(config(), {"door": frame()}, NOW, stop)
    pub.start()
    time.sleep(1.3)  # past the first round an interval would have run
    stop.set()
    pub.join()
    assert sent == []


def test_home_assistant_image_entity_per_camera() -> None:
    cfg = AgentConfig.model_validate(
        {
            "device": {"id": "cam-001"},
            "cameras": [{"name": "door"}],
            "mqtt": {"homeassistant": {"enabled": True}},
        }
    )
    configs = discovery(cfg, TOPICS, [])
    image = configs["homeassistant/image/cam-001/snapshot_door/config"]
    assert image["image_topic"] == "ea/v1/d/cam-001/snapshot/door"
    assert image["content_type"] == "image/jpeg"
    assert image["unique_id"] == "edge_agent_cam-001_snapshot_door"
    assert image["availability"][0]["topic"] == TOPICS.state
    # HA's image schema: exactly one of image_topic / url_topic; content_type not with url_topic.
    assert "url_topic" not in image
    assert "image_encoding" not in image


def test_remote_config_cannot_turn_snapshot_publishing_on() -> None:
    tree = {"telemetry": {"stats_interval_s": 5, "snapshot_interval_s": 1}}
    issues = remote_issues(tree, {}, "mqtt:config v2")
    assert [i.key_path for i in issues] == ["telemetry.snapshot_interval_s"]


def test_an_outage_queues_one_image_per_camera(tmp_path: Path) -> None:
    """Retained stats messages: each new image supersedes the undelivered one (real SQLite)."""
    store = OutboxStore(tmp_path / "outbox.db", OutboxConfig(), SystemClock(), "ea/v1/d/x/e/dc")
    stop = threading.Event()
    pub, sent = make(config(), {"door": frame(), "yard": frame()}, NOW, stop)
    for camera in ("door", "yard", "door", "door", "yard"):
        pub.publish(camera)
        store.insert_batch(sent[-1:])
    rows = store.next_rows(above_id=0, up_to_id=None, exclude=set(), limit=10)
    assert sorted(r.topic for r in rows) == [
        "ea/v1/d/cam-001/snapshot/door",
        "ea/v1/d/cam-001/snapshot/yard",
    ]
    assert store.snapshot()["superseded"] == 3
    store.close()
