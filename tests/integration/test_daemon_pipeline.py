"""`edge-agent run` as a real process: real pipeline on the sample clip, real broker, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.daemon.control import request
from agent.uplink.topics import Topics
from tests.integration.mqtt_helpers import Recorder
from tests.support.daemon_proc import door_camera
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker
TOPICS = Topics("ea/v1", "cam-001")


def test_run_publishes_detections_and_exits_zero_on_sigterm(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    write_config,
    sample_clip: Path,
    short_range_model: Path,
) -> None:
    sock = tmp_path / "run" / "control.sock"
    cfg = write_config(
        f"""
        [device]
        id = "cam-001"
        [mqtt]
        url = "{mosquitto.url}"
        [storage]
        state_dir = "{tmp_path / "state"}"
        [control]
        socket_path = "{sock}"
        [outbox]
        batch_interval_s = 0.1
        {door_camera(sample_clip, short_range_model)}
        """
    )
    rec = Recorder(mosquitto.url, f"{TOPICS.base}/#")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert rec.wait_for(lambda: len(rec.on(TOPICS.detection)) >= 5, timeout_s=40), proc.poll()
        seqs = [json.loads(p)["seq"] for p in rec.on(TOPICS.detection)]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        first = json.loads(rec.on(TOPICS.detection)[0])
        assert first["camera"] == "door"
        assert first["model"] == "detector"
        assert first["detections"][0]["label"]
        status = request(sock, {"op": "status"})
        assert status["link"]["connected"] is True
        assert "detector" in status["models"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert not json.loads(rec.on(TOPICS.state)[-1])["online"]
    rec.close()
