"""Home Assistant discovery from a real ``edge-agent run`` (real camera clip, real model)
against a real Mosquitto: the configs follow Home Assistant's discovery rules, and every
template, rendered with Jinja2 the way Home Assistant renders it (``value_json``), gives
the right value on the messages the agent really publishes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.publish as mqtt_publish
import pytest

from tests.integration.mqtt_helpers import Recorder
from tests.support import daemon_proc

jinja2 = pytest.importorskip("jinja2", reason="renders the templates as Home Assistant does")
pytestmark = pytest.mark.broker

CONFIG_TOPIC = re.compile(
    r"^homeassistant/(sensor|binary_sensor|update|image)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$"
)
BASE = "ea/v1/d/cam-001"
HOMEASSISTANT = """
[mqtt.homeassistant]
enabled = true
labels = ["face", "person"]
presence_off_s = 5
refresh_s = 0.5
"""


def render(template: str, payload: bytes) -> str:
    env = jinja2.Environment(autoescape=False)
    env.filters["tojson"] = json.dumps
    return env.from_string(template).render(value_json=json.loads(payload)).strip()


def test_discovery_configs_and_templates_on_real_messages(
    mosquitto, tmp_path: Path, sample_clip: Path, short_range_model: Path
):
    config = daemon_proc.minimal_config(
        tmp_path / "agent.toml",
        broker_url=mosquitto.url,
        state_dir=tmp_path / "state",
        socket_path=tmp_path / "ctl.sock",
        telemetry="stats_interval_s = 0.5\nsnapshot_max_width_px = 320",
        extra=HOMEASSISTANT + daemon_proc.door_camera(sample_clip, short_range_model),
    )
    ha = Recorder(mosquitto.url, "homeassistant/#", client_id="ha")
    dev = Recorder(mosquitto.url, f"{BASE}/#", client_id="dev")
    proc = daemon_proc.spawn(config, tmp_path / "daemon.log")
    try:
        daemon_proc.wait_running(tmp_path / "ctl.sock", proc)

        def configs() -> dict[str, dict]:
            return {t: json.loads(p) for t, p, _r in list(ha.messages) if t.endswith("/config")}

        assert ha.wait_for(lambda: len(configs()) == 9, 20), sorted(configs())
        assert dev.wait_for(
            lambda: (
                dev.on(f"{BASE}/m/stats")
                and dev.on(f"{BASE}/e/detection")
                and dev.on(f"{BASE}/health")
                and dev.on(f"{BASE}/ha/update/detector")
            ),
            30,
        )
        found = configs()
        kinds = sorted(t.split("/")[1] + ":" + t.split("/")[3] for t in found)
        assert kinds == [
            "binary_sensor:present_face",
            "binary_sensor:present_person",
            "image:snapshot_door",
            "sensor:fps_door",
            "sensor:health",
            "sensor:inference_ms_detector",
            "sensor:outbox_depth",
            "sensor:temperature",
            "update:model_detector",
        ]
        unique_ids = [doc["unique_id"] for doc in found.values()]
        assert len(set(unique_ids)) == len(unique_ids)
        # Retained: a subscriber that comes later (Home Assistant starting) gets them all.
        late = Recorder(mosquitto.url, "homeassistant/#", client_id="late")
        try:
            assert late.wait_for(lambda: len(late.messages) >= len(found), 5)
            assert {t for t, _p, r in late.messages if r} == set(found)
        finally:
            late.close()
        birth = dev.on(f"{BASE}/state")[-1]
        for topic, doc in found.items():
            assert CONFIG_TOPIC.match(topic), topic
            assert topic.split("/")[2] == "cam-001"  # node_id: the device id
            assert doc.get("state_topic", doc.get("image_topic")).startswith(BASE + "/")
            assert doc["device"]["identifiers"] == ["edge_agent_cam-001"]
            assert doc["device"]["name"] == "cam-001"
            assert doc["origin"]["name"] == "edge-agent"
            [avail] = doc["availability"]
            assert avail["topic"] == f"{BASE}/state"  # the agent's birth / last will
            assert render(avail["value_template"], birth) == avail["payload_available"]
            offline = json.dumps({"online": False, "session": 1}).encode()
            assert render(avail["value_template"], offline) == avail["payload_not_available"]

        def entity(component: str, obj: str) -> dict:
            return found[f"homeassistant/{component}/cam-001/{obj}/config"]

        stats = dev.on(f"{BASE}/m/stats")[-1]
        fps = float(render(entity("sensor", "fps_door")["value_template"], stats))
        assert fps >= 0
        ms = float(render(entity("sensor", "inference_ms_detector")["value_template"], stats))
        assert ms > 0
        assert entity("sensor", "inference_ms_detector")["device_class"] == "duration"
        assert int(render(entity("sensor", "outbox_depth")["value_template"], stats)) >= 0
        temp = render(entity("sensor", "temperature")["value_template"], stats)
        assert temp == "None" or float(temp) > -50  # "None" is unknown to Home Assistant
        health = entity("sensor", "health")
        assert render(health["value_template"], dev.on(f"{BASE}/health")[-1]) in health["options"]

        # A real detection (the sample model's faces) switches "face" on, not "person".
        event = dev.on(f"{BASE}/e/detection")[-1]
        assert entity("binary_sensor", "present_face")["state_topic"] == f"{BASE}/e/detection"
        assert render(entity("binary_sensor", "present_face")["value_template"], event) == "ON"
        assert render(entity("binary_sensor", "present_person")["value_template"], event) == ""
        assert entity("binary_sensor", "present_face")["off_delay"] == 5

        # The update entity: installed vs latest manifest version, from the update store.
        update = json.loads(dev.on(f"{BASE}/ha/update/detector")[-1])
        assert entity("update", "model_detector")["state_topic"] == f"{BASE}/ha/update/detector"
        assert update == {
            "installed_version": "shipped",
            "latest_version": "shipped",
            "title": "detector model",
        }

        # The image entity (Home Assistant's MQTT image schema: image_topic, not url_topic,
        # raw bytes as no image_encoding is given) shows the snapshot a command asks for.
        image = entity("image", "snapshot_door")
        assert image["image_topic"] == f"{BASE}/snapshot/door"
        assert image["content_type"] == "image/jpeg"
        assert "url_topic" not in image
        assert "image_encoding" not in image
        assert "state_topic" not in image
        assert not dev.on(f"{BASE}/snapshot/door")  # no interval: only on the command
        mqtt_publish.single(
            f"{BASE}/cmd/snapshot/s1", "{}", qos=1, hostname="127.0.0.1", port=mosquitto.port
        )
        assert dev.wait_for(lambda: dev.on(f"{BASE}/snapshot/door"), 10), "no snapshot image"
        jpeg = dev.on(f"{BASE}/snapshot/door")[-1]
        assert len(jpeg) <= 64 * 1024
        picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None
        assert picture.shape == (240, 320, 3)  # the 640x480 clip at snapshot_max_width_px
        assert dev.wait_for(
            lambda: any(
                json.loads(p).get("status") == "successful"
                for p in dev.on(f"{BASE}/op/snapshot/s1")
            ),
            10,
        )
        op = json.loads(dev.on(f"{BASE}/op/snapshot/s1")[-1])
        assert op["result"]["image_topic"] == f"{BASE}/snapshot/door"
        # Retained: Home Assistant starting later gets the latest image at once.
        late_img = Recorder(mosquitto.url, f"{BASE}/snapshot/#", client_id="late-img")
        try:
            assert late_img.wait_for(lambda: late_img.on(f"{BASE}/snapshot/door"), 5)
            assert [r for t, _p, r in late_img.messages] == [True]
        finally:
            late_img.close()

        # Home Assistant restarting announces itself: the configs come again, live.
        before = len(ha.messages)
        mqtt_publish.single(
            "homeassistant/status", "online", hostname="127.0.0.1", port=mosquitto.port
        )
        assert ha.wait_for(lambda: any(not r for _t, _p, r in ha.messages[before:]), 10), (
            "configs not re-sent"
        )
    finally:
        ha.close()
        dev.close()
        assert daemon_proc.stop(proc) == 0
