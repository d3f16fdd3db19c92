"""Issue 17.7: `edge-agent status` prints sentences, not Python dicts, and names what is down."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from agent.cli.main import main
from agent.daemon.control import ControlServer


def test_live_status_names_the_failing_component_and_prints_no_dicts(
    tmp_path: Path, write_config, clean_env, capsys
):
    config = write_config(f"""
[device]
id = "cam-007"
[storage]
state_dir = "{tmp_path}/state"
[control]
socket_path = "{tmp_path}/run/control.sock"
""")
    reply: dict[str, Any] = {
        "ok": True,
        "daemon": {"pid": 99, "version": "0.1.0", "uptime_s": 5.0},
        "health": {
            "status": "down",
            "components": {
                "camera:door": {"status": "down", "detail": "cannot open /dev/video0"},
                "uplink": {"status": "ok", "detail": "connected"},
            },
        },
        "models": {
            "detector": {
                "path": "/m/face.tflite",
                "backend": "tflite",
                "runtime": "litert",
                "version": "1.2",
                "device": "cpu",
                "input_shape": [1, 128, 128, 3],
            },
            "plates": {"path": "/m/plates.onnx", "error": "file not found"},
        },
        "link": {"connected": True, "url": "mqtt://x:1883"},
        "outbox": {"depth": 17, "bytes": 2_000_000, "dropped": {"expired": {"stats": 3}}},
        "alarms": {"camera_door_down": {}},
    }
    stop = threading.Event()
    server = ControlServer(tmp_path / "run/control.sock", {"status": lambda _req: reply}, stop)
    server.start()
    try:
        assert main(["status", "--config", str(config)]) == 0
        out = capsys.readouterr().out
    finally:
        server.stop()
    assert "{" not in out
    assert "health:  down: camera:door down (cannot open /dev/video0)\n" in out
    assert "uplink" not in out.split("health:")[1].splitlines()[0]
    assert "model:   detector: /m/face.tflite (tflite, litert 1.2 cpu, input 1x128x128x3)" in out
    assert "model:   plates: NOT LOADED /m/plates.onnx: file not found" in out
    assert "outbox:  17 queued, 2.0 MB, 3 dropped" in out
    assert "alarms:  camera_door_down" in out
