"""Remote config against a real Mosquitto and a real daemon process (issue 18.1 a, b).

(a) Only allow-listed keys may be set remotely: a broker password read from a device file
plus an attacker's broker URL is refused as ``not_allowed`` naming both keys, and nothing
is stored. (b) A remote change is applied on trial: a good one is confirmed once the daemon
is back, connected and healthy; a bad allowed one (a decoder that does not fit the model)
is reverted to the last good config by the daemon itself after the trial deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from agent.config.desired import desired_path
from agent.uplink.topics import Topics
from tests.integration.mqtt_helpers import Recorder
from tests.support.daemon_proc import Restarter, minimal_config, status
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker
TOPICS = Topics("ea/v1", "cam-001", "f1")
TRIAL_S = 12  # long enough for a loaded CI machine to bring a good config up


def run_device(
    broker: MosquittoBroker, tmp_path: Path, clip: Path, model: Path, control: str
) -> Iterator[tuple[Restarter, Path, Recorder]]:
    sock = tmp_path / "run" / "control.sock"
    cfg = minimal_config(
        tmp_path / "agent.toml",
        broker_url=broker.url,
        state_dir=tmp_path / "state",
        socket_path=sock,
        control=control,
        extra=f"""
        [[cameras]]
        name = "door"
        source = "file:{clip}"
        fps = 10
        loop = true
        [[models]]
        slot = "detector"
        path = "{model}"
        cameras = ["door"]
        threshold = 0.5
        """,
    )
    rec = Recorder(broker.url, f"{TOPICS.base}/#")
    daemon = Restarter(cfg, tmp_path / "daemon.log").start()
    try:
        assert wait_for(lambda: healthy(sock), 40), daemon.log_text()[-3000:]
        yield daemon, sock, rec
    finally:
        daemon.stop()
        rec.close()


@pytest.fixture
def device(
    mosquitto: MosquittoBroker, tmp_path: Path, sample_clip: Path, short_range_model: Path
) -> Iterator[tuple[Restarter, Path, Recorder]]:
    """The daemon with the default trial settings."""
    yield from run_device(mosquitto, tmp_path, sample_clip, short_range_model, "")


@pytest.fixture
def short_trial_device(
    mosquitto: MosquittoBroker, tmp_path: Path, sample_clip: Path, short_range_model: Path
) -> Iterator[tuple[Restarter, Path, Recorder]]:
    control = f"config_trial_s = {TRIAL_S}\nconfig_healthy_s = 1"
    yield from run_device(mosquitto, tmp_path, sample_clip, short_range_model, control)


def healthy(sock: Path) -> dict[str, Any] | None:
    reply = status(sock)
    if reply is None or not reply["link"]["connected"]:
        return None
    model = reply["health"]["components"].get("model:detector", {})
    return reply if model.get("status") == "ok" else None


def send_config(broker: MosquittoBroker, cmd_id: str, doc: dict[str, Any]) -> None:
    topic = TOPICS.cmd("config", cmd_id)
    mqtt_publish.single(topic, json.dumps(doc).encode(), qos=1, port=broker.port)


def final(rec: Recorder, cmd_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        states = [json.loads(p) for p in rec.on(TOPICS.op("config", cmd_id)) if p]
        return states[-1] if states and states[-1]["status"] in ("successful", "failed") else None

    assert rec.wait_for(lambda: done() is not None, timeout_s=20), f"no answer to {cmd_id}"
    result = done()
    assert result is not None
    return result


def test_credentials_and_broker_url_are_refused_naming_the_keys(
    device: tuple[Restarter, Path, Recorder], mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    daemon, sock, rec = device
    secret = tmp_path / "device.key"
    secret.write_text("PRIVATE KEY MATERIAL\n", encoding="utf-8")
    before = status(sock)
    assert before is not None
    attack = {
        "version": 1,
        "config": {
            "mqtt": {"url": "mqtt://attacker.example:1883", "password": f"file:{secret}"},
            "control": {"socket_path": str(tmp_path / "state" / "outbox.db")},
        },
    }
    send_config(mosquitto, "steal", attack)
    answer = final(rec, "steal")
    assert answer["status"] == "failed"
    assert answer["reason"] == "not_allowed"
    keys = {e["key_path"] for e in answer["errors"]}
    assert {"mqtt.url", "mqtt.password", "control.socket_path"} <= keys
    assert "PRIVATE KEY" not in json.dumps(answer)
    assert not desired_path(tmp_path / "state").exists()
    time.sleep(1.0)  # a restart, if one were coming, would have begun
    after = status(sock)
    assert after is not None
    assert after["daemon"]["pid"] == before["daemon"]["pid"]
    assert after["link"]["url"] == mosquitto.url
    assert daemon.exits == []


def test_a_bad_allowed_change_is_reverted_to_the_last_good_one(
    short_trial_device: tuple[Restarter, Path, Recorder],
    mosquitto: MosquittoBroker,
    tmp_path: Path,
) -> None:
    daemon, sock, rec = short_trial_device
    state = tmp_path / "state"
    good = {"version": 2, "config": {"models": [{"slot": "detector", "threshold": 0.55}]}}
    send_config(mosquitto, "good", good)
    assert final(rec, "good")["result"]["trial"] is True
    # Restarted with v2 on trial; confirmed once connected and healthy for a second.
    assert wait_for(
        lambda: json.loads(desired_path(state).read_text()).get("state") == "good", 40
    ), daemon.log_text()[-3000:]
    reply = healthy(sock)
    assert reply is not None
    assert reply["config_version"] == 2

    bad = {"version": 3, "config": {"models": [{"slot": "detector", "decoder": "classify"}]}}
    send_config(mosquitto, "bad", bad)
    assert final(rec, "bad")["status"] == "successful"  # allowed and valid: on trial

    def reverted() -> dict[str, Any] | None:
        reply = healthy(sock)
        return reply if reply is not None and reply.get("config_reverted") else None

    assert wait_for(reverted, TRIAL_S + 40), daemon.log_text()[-3000:]
    reply = reverted()
    assert reply is not None
    assert reply["config_version"] == 2  # the last good one, not the file alone
    assert reply["config_reverted"]["version"] == 3
    assert reply["config_reverted"]["restored_version"] == 2
    assert daemon.exits == [75, 75, 75]  # v2 applied, v3 applied, v3 reverted
    stored = json.loads(desired_path(state).read_text())
    assert stored["version"] == 2
    assert stored["state"] == "good"
    # The operator sees why, retained, and cannot re-send the same version.
    assert rec.wait_for(lambda: rec.on(f"{TOPICS.base}/a/config_reverted"), timeout_s=10)
    alarm = json.loads(rec.on(f"{TOPICS.base}/a/config_reverted")[-1])
    assert "v3" in alarm["text"]
    send_config(mosquitto, "again", bad)
    assert final(rec, "again")["reason"] == "version_conflict"
