"""``edge-agent status``: live over the control socket (exit 0), from disk when down (exit 3)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from agent.daemon.control import ControlServer
from agent.timeguard import record_good_time


@pytest.fixture
def config(tmp_path: Path, write_config, clean_env) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    return write_config(f"""
[device]
id = "cam-007"
[storage]
state_dir = "{state}"
[control]
socket_path = "{tmp_path}/run/control.sock"
""")


def test_down_reads_disk_and_exits_3(config: Path, tmp_path: Path, capsys):
    record_good_time(tmp_path / "state", time.time())
    code = main(["status", "--config", str(config), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 3
    assert doc["running"] is False
    assert "control.sock" in doc["reason"]
    assert doc["device"]["id"] == "cam-007"
    assert doc["outbox"]["present"] is False
    assert doc["update"]["slots"] == {}
    assert doc["last_known_good_time"] is not None


def test_down_human_output(config: Path, capsys):
    assert main(["status", "--config", str(config)]) == 3
    out = capsys.readouterr().out
    assert out.startswith("NOT RUNNING")
    assert "cam-007" in out


def test_stale_socket_file_counts_as_down(config: Path, tmp_path: Path, capsys):
    import socket

    path = tmp_path / "run/control.sock"
    path.parent.mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))  # bound but never listening: connect is refused
    try:
        assert main(["status", "--config", str(config), "--json"]) == 3
    finally:
        sock.close()
    assert json.loads(capsys.readouterr().out)["running"] is False


def test_running_daemon_answers(config: Path, tmp_path: Path, capsys):
    reply: dict[str, Any] = {
        "ok": True,
        "daemon": {"pid": 99, "version": "0.1.0", "uptime_s": 5.0, "started_at": "t"},
        "health": {"status": "degraded", "components": {}},
        "stats": {},
        "models": {"detector": {"release": 2}},
        "link": {"connected": False, "url": "mqtt://x:1883"},
        "outbox": {"depth": 17},
    }
    stop = threading.Event()
    server = ControlServer(tmp_path / "run/control.sock", {"status": lambda req: reply}, stop)
    server.start()
    try:
        code = main(["status", "--config", str(config), "--json"])
        doc = json.loads(capsys.readouterr().out)
        assert main(["status", "--config", str(config)]) == 0
        human = capsys.readouterr().out
    finally:
        server.stop()
    assert code == 0
    assert doc["running"] is True
    assert doc["daemon"]["pid"] == 99
    assert doc["outbox"] == {"depth": 17}
    assert "ok" not in doc
    assert "DISCONNECTED" in human
    assert "degraded" in human
