"""``config``, ``snapshot`` and ``health_check`` through a running Supervisor and a real broker."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.assets import find_asset
from agent.config import load_config
from agent.config.desired import desired_path, load_with_desired
from agent.daemon.control import request
from agent.daemon.supervisor import RESTART_EXIT_CODE, Supervisor
from agent.events.types import EventSink
from tests.integration.mqtt_helpers import Recorder
from tests.integration.test_daemon_supervisor import TOPICS, FakePipeline, op_states, send
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker


class FramePipeline(FakePipeline):
    """The fake pipeline plus the real Pipeline's ``latest_frame`` over a real photo."""

    def __init__(self, sink: EventSink, stop: threading.Event, frame: npt.NDArray[np.uint8]):
        super().__init__(sink, stop)
        self.frame = frame

    def latest_frame(self, camera: str) -> npt.NDArray[np.uint8] | None:
        return self.frame.copy() if camera == "door" else None


@pytest.fixture
def photo() -> npt.NDArray[np.uint8]:
    path = find_asset("images/astronaut.png")
    assert path is not None
    image = cv2.imread(str(path))
    assert image is not None
    return image


@pytest.fixture
def config_path(mosquitto: MosquittoBroker, tmp_path: Path, write_config) -> Path:
    return write_config(
        f"""
        [device]
        id = "cam-001"
        [mqtt]
        url = "{mosquitto.url}"
        reconnect_min_s = 0.2
        [storage]
        state_dir = "{tmp_path / "state"}"
        [control]
        socket_path = "{tmp_path / "run" / "control.sock"}"
        [telemetry]
        stats_interval_s = 30
        health_interval_s = 0.2
        [outbox]
        batch_interval_s = 0.05
        [[cameras]]
        name = "door"
        source = "file:/nonexistent.mp4"
        """
    )


class Daemon:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(sup.run()), name="d")
        self.thread.start()

    def stop(self) -> int:
        self.sup.stop_event.set()
        self.thread.join(20)
        assert self.result, "daemon did not stop"
        return self.result[0]


def start(loaded: Any, frame: npt.NDArray[np.uint8]) -> Daemon:
    return Daemon(
        Supervisor(
            loaded,
            pipeline_factory=lambda _c, sink, _d, stop: FramePipeline(sink, stop, frame),
        )
    )


def final(rec: Recorder, op: str, cmd_id: str) -> dict[str, Any]:
    assert rec.wait_for(
        lambda: any(s["status"] in ("successful", "failed") for s in op_states(rec, op, cmd_id))
    ), f"no final state for {op}/{cmd_id}"
    return op_states(rec, op, cmd_id)[-1]


def command(broker: MosquittoBroker, op: str, cmd_id: str, doc: dict[str, Any]) -> None:
    send(broker, op, cmd_id, json.dumps(doc).encode())


def test_config_validated_persisted_applied_by_restart(
    mosquitto: MosquittoBroker, config_path: Path, tmp_path: Path, photo, clean_env
) -> None:
    rec = Recorder(mosquitto.url, f"{TOPICS.base}/#")
    stored = desired_path(tmp_path / "state")
    daemon = start(load_config(config_path, {}), photo)
    try:
        assert rec.wait_for(lambda: daemon.sup.link is not None and daemon.sup.link.connected)
        bad = {"version": 1, "config": {"telemetry": {"stats_interval_s": -5}}}
        command(mosquitto, "config", "bad", bad)
        failed = final(rec, "config", "bad")
        assert failed["status"] == "failed"
        assert failed["reason"] == "invalid_config"
        keys = {e["key_path"]: e for e in failed["errors"]}
        assert set(keys) == {"telemetry.stats_interval_s"}
        assert keys["telemetry.stats_interval_s"]["source"] == "mqtt:config v1"
        assert not stored.exists()  # an invalid config changes nothing
        assert daemon.thread.is_alive()

        command(mosquitto, "config", "no-version", {"config": {}})
        assert final(rec, "config", "no-version")["reason"] == "malformed"

        good = {"version": 2, "config": {"telemetry": {"stats_interval_s": 7}}}
        command(mosquitto, "config", "good", good)
        daemon.thread.join(20)
    finally:
        code = daemon.stop()
    assert code == RESTART_EXIT_CODE
    ok = final(rec, "config", "good")
    assert ok["status"] == "successful"
    assert ok["result"]["version"] == 2
    assert ok["result"]["restart_required"] == ["telemetry.stats_interval_s"]
    assert json.loads(stored.read_text())["version"] == 2

    # What `edge-agent run` loads after the restart: the new layer, then older versions refused.
    loaded = load_with_desired(config_path, {})
    assert loaded.config.telemetry.stats_interval_s == 7
    assert loaded.desired_version == 2
    daemon = start(loaded, photo)
    try:
        assert rec.wait_for(lambda: daemon.sup.link is not None and daemon.sup.link.connected)
        command(mosquitto, "config", "old", {"version": 2, "config": {}})
        conflict = final(rec, "config", "old")
        assert conflict["reason"] == "version_conflict"
        assert conflict["current_version"] == 2
        # Same effective config, newer version: persisted, nothing to restart for.
        same = {"version": 3, "config": {"telemetry": {"stats_interval_s": 7}}}
        command(mosquitto, "config", "same", same)
        assert final(rec, "config", "same")["result"]["restarting"] is False
        assert json.loads(stored.read_text())["version"] == 3
        assert daemon.thread.is_alive()
        # The version in effect is reported in the birth message and the local status.
        births = [json.loads(p) for p in rec.on(TOPICS.state)]
        assert births[-1]["online"] is True
        assert births[-1]["config_version"] == 2
        status = request(Path(daemon.sup.config.control.socket_path), {"op": "status"})
        assert status["config_version"] == 2
    finally:
        assert daemon.stop() == 0
    rec.close()


def test_snapshot_and_health_check(
    mosquitto: MosquittoBroker, config_path: Path, photo, clean_env
) -> None:
    rec = Recorder(mosquitto.url, f"{TOPICS.base}/op/#")
    daemon = start(load_config(config_path, {}), photo)
    try:
        assert rec.wait_for(lambda: daemon.sup.link is not None and daemon.sup.link.connected)
        command(mosquitto, "snapshot", "s1", {"camera": "door", "max_bytes": 20_000})
        command(mosquitto, "snapshot", "s2", {"camera": "door", "max_bytes": 50})
        command(mosquitto, "snapshot", "s3", {"camera": "garage"})
        command(mosquitto, "health_check", "h1", {})
        snap = final(rec, "snapshot", "s1")
        assert snap["status"] == "successful", snap
        jpeg = base64.b64decode(snap["result"]["jpeg_b64"])
        assert len(jpeg) == snap["result"]["bytes"] <= 20_000
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (snap["result"]["height"], snap["result"]["width"])
        assert final(rec, "snapshot", "s2")["reason"] == "too_large"
        assert final(rec, "snapshot", "s3")["reason"] == "malformed"
        health = final(rec, "health_check", "h1")
        assert health["status"] == "successful"
        assert health["result"]["health"]["components"]["camera:door"]["status"] == "ok"
    finally:
        assert daemon.stop() == 0
    rec.close()
