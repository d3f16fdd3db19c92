"""The supervisor end to end with a real broker and a small fake pipeline (no camera here)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from agent.config import load_config
from agent.daemon.control import request
from agent.daemon.supervisor import RESTART_EXIT_CODE, Supervisor
from agent.errors import ModelLoadError
from agent.events.types import Detection, DetectionEvent, EventSink
from agent.uplink.topics import Topics
from tests.integration.mqtt_helpers import Recorder
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker
TOPICS = Topics("ea/v1", "cam-001")


class FakePipeline:
    """Implements the Pipeline API; emits one event every 20 ms from its own thread."""

    def __init__(self, sink: EventSink, stop: threading.Event) -> None:
        self.sink = sink
        self.stop_event = stop
        self.seq = 0
        self.progress = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="fake-pipeline", daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(0.02):
            self.seq += 1
            det = Detection("face", 0.9, (1.0, 2.0, 3.0, 4.0))
            self.sink(DetectionEvent(self.seq, time.time(), "door", "detector", (det,)))
            self.progress = time.monotonic()

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self.thread.join(timeout_s)

    def stats_snapshot(self) -> dict[str, Any]:
        return {"cameras": {"door": {"capture_fps": 50.0}}, "events": self.seq}

    def health_snapshot(self) -> dict[str, dict[str, str]]:
        return {"camera:door": {"status": "ok", "detail": "fake"}}

    def reload_model(self, slot: str, path: Path) -> None:
        raise ModelLoadError(f"the fake pipeline has no models to reload ({path})", model=slot)

    def model_info(self) -> dict[str, Any]:
        return {"detector": {"sha256": "0" * 64}}

    def last_progress_mono_s(self) -> float:
        return self.progress


def make_supervisor(broker: MosquittoBroker, tmp_path: Path, write_config) -> Supervisor:
    path = write_config(
        f"""
        [device]
        id = "cam-001"
        [mqtt]
        url = "{broker.url}"
        reconnect_min_s = 0.2
        [storage]
        state_dir = "{tmp_path / "state"}"
        [control]
        socket_path = "{tmp_path / "run" / "control.sock"}"
        [telemetry]
        stats_interval_s = 0.5
        health_interval_s = 0.2
        [outbox]
        batch_interval_s = 0.05
        """
    )
    loaded = load_config(path, environ={})
    return Supervisor(loaded, pipeline_factory=lambda _c, sink, _d, stop: FakePipeline(sink, stop))


def send(broker: MosquittoBroker, op: str, cmd_id: str, payload: bytes) -> None:
    mqtt_publish.single(TOPICS.cmd(op, cmd_id), payload, qos=1, port=broker.port)


def op_states(rec: Recorder, op: str, cmd_id: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in rec.on(TOPICS.op(op, cmd_id))]


def last_status(rec: Recorder, op: str, cmd_id: str) -> str | None:
    states = op_states(rec, op, cmd_id)
    return states[-1]["status"] if states else None


def test_daemon_runs_reports_answers_and_stops_cleanly(
    mosquitto: MosquittoBroker, tmp_path: Path, write_config, clean_env
) -> None:
    rec = Recorder(mosquitto.url, f"{TOPICS.base}/#")
    sup = make_supervisor(mosquitto, tmp_path, write_config)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(sup.run()), name="test-daemon")
    runner.start()
    try:
        # Live traffic may overtake events still in the backlog when the link came up
        # (docs/mqtt.md); what must hold is no duplicate and, once delivered, no gap.
        def seqs() -> list[int]:
            return [json.loads(p)["seq"] for p in rec.on(TOPICS.detection)]

        def contiguous() -> bool:
            got = seqs()
            return len(got) >= 20 and sorted(got) == list(range(min(got), min(got) + len(got)))

        assert rec.wait_for(contiguous)
        assert len(set(seqs())) == len(seqs())
        assert rec.wait_for(lambda: rec.on(TOPICS.health) and rec.on(TOPICS.stats))
        health = json.loads(rec.on(TOPICS.health)[-1])
        assert health["components"]["camera:door"]["status"] == "ok"
        assert health["components"]["uplink"]["status"] == "ok"
        stats = json.loads(rec.on(TOPICS.stats)[-1])
        assert stats["process"]["rss_mb"] > 0
        assert "outbox" in stats

        status = request(Path(sup.config.control.socket_path), {"op": "status"})
        assert status["ok"] is True
        assert status["link"]["connected"] is True
        assert status["daemon"]["version"]
        assert status["health"]["components"]["camera:door"]["status"] == "ok"

        send(mosquitto, "ping", "c1", b"{}")
        send(mosquitto, "ping", "c2", b"{not json")
        send(mosquitto, "selfdestruct", "c3", b"{}")
        bad = {"version": 1, "config": {"telemetry": {"stats_interval_s": -1}}}
        send(mosquitto, "config", "c4", json.dumps(bad).encode())
        assert rec.wait_for(
            lambda: all(
                last_status(rec, op, cid) in ("successful", "failed")
                for op, cid in [
                    ("ping", "c1"),
                    ("ping", "c2"),
                    ("selfdestruct", "c3"),
                    ("config", "c4"),
                ]
            )
        )
        assert op_states(rec, "ping", "c1")[-1]["status"] == "successful"
        # executing (1) may be superseded in the outbox by successful (2): retained, latest wins.
        versions = [s["status_version"] for s in op_states(rec, "ping", "c1")]
        assert versions == sorted(versions)
        assert versions[-1] == 2
        assert op_states(rec, "ping", "c2")[-1]["reason"] == "malformed"
        assert op_states(rec, "selfdestruct", "c3")[-1]["reason"] == "unknown_operation"
        bad_config = op_states(rec, "config", "c4")[-1]
        assert bad_config["reason"] == "invalid_config"
        assert any(e["key_path"] == "telemetry.stats_interval_s" for e in bad_config["errors"])

        # A redelivered command re-publishes its last state; it does not run again.
        before = len(op_states(rec, "ping", "c1"))
        send(mosquitto, "ping", "c1", b"{}")
        assert rec.wait_for(lambda: len(op_states(rec, "ping", "c1")) == before + 1)
        assert op_states(rec, "ping", "c1")[-1] == op_states(rec, "ping", "c1")[-2]
    finally:
        sup.stop_event.set()
        runner.join(20)
    assert result == [0]
    assert rec.wait_for(lambda: not json.loads(rec.on(TOPICS.state)[-1])["online"])
    assert not Path(sup.config.control.socket_path).exists()
    rec.close()


def test_restart_command_exits_non_zero_after_reporting(
    mosquitto: MosquittoBroker, tmp_path: Path, write_config, clean_env
) -> None:
    rec = Recorder(mosquitto.url, f"{TOPICS.base}/op/#")
    sup = make_supervisor(mosquitto, tmp_path, write_config)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(sup.run()), name="test-daemon")
    runner.start()
    try:
        assert sup.link is not None or rec.wait_for(lambda: sup.link is not None)
        assert rec.wait_for(lambda: sup.link is not None and sup.link.connected)
        send(mosquitto, "restart", "r1", b"{}")
        runner.join(20)
    finally:
        sup.stop_event.set()
        runner.join(20)
    assert result == [RESTART_EXIT_CODE]
    assert rec.wait_for(lambda: last_status(rec, "restart", "r1") == "successful")
    rec.close()
