"""Control socket liveness (issue 18.8): idle clients must not make a running daemon look dead.

Before: one thread served the socket one connection at a time with a 5 s read timeout, so
three idle connections made ``edge-agent status`` report NOT RUNNING after about 5 s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon import control
from agent.daemon.control import ControlServer, request
from tests.support.daemon_proc import REPO, env, minimal_config, spawn, stop, wait_running
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker


def idle_connections(path: Path, count: int) -> list[socket.socket]:
    conns = []
    for _ in range(count):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(path))
        conns.append(conn)
    return conns


def test_status_answers_while_three_clients_sit_idle(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    sock = tmp_path / "run" / "control.sock"
    cfg = minimal_config(
        tmp_path / "agent.toml",
        broker_url=mosquitto.url,
        state_dir=tmp_path / "state",
        socket_path=sock,
    )
    daemon = spawn(cfg)
    conns: list[socket.socket] = []
    try:
        pid = wait_running(sock, daemon)
        conns = idle_connections(sock, 3)
        begun = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--json", "--config", str(cfg)],
            env=env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        took = time.monotonic() - begun
        assert done.returncode == 0, done.stdout + done.stderr
        doc = json.loads(done.stdout)
        assert doc["running"] is True
        assert doc["daemon"]["pid"] == pid
        assert took < 4.0, f"status took {took:.1f} s"
    finally:
        for conn in conns:
            conn.close()
        assert stop(daemon) == 0


@pytest.fixture
def fast_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlServer]:
    monkeypatch.setattr(control, "REQUEST_DEADLINE_S", 0.3)
    monkeypatch.setattr(control, "MAX_CONNECTIONS", 4)
    stop_event = threading.Event()
    srv = ControlServer(
        tmp_path / "run" / "c.sock",
        {"status": lambda _r: {"ok": True, "pid": os.getpid()}},
        stop_event,
    )
    srv.start()
    yield srv
    srv.stop()


def test_an_idle_client_is_cut_off_at_its_deadline(fast_server: ControlServer) -> None:
    (conn,) = idle_connections(fast_server.socket_path, 1)
    conn.settimeout(3.0)
    begun = time.monotonic()
    assert conn.recv(10) == b""  # the server closed it, without an answer
    assert time.monotonic() - begun < 2.0
    conn.close()
    assert request(fast_server.socket_path, {"op": "status"})["ok"] is True


def test_past_the_connection_limit_a_client_hears_busy_at_once(
    fast_server: ControlServer,
) -> None:
    conns = idle_connections(fast_server.socket_path, 4)
    try:
        begun = time.monotonic()
        reply = request(fast_server.socket_path, {"op": "status"}, timeout_s=2.0)
        assert reply == {"ok": False, "error": "busy"}
        assert time.monotonic() - begun < 0.25
    finally:
        for conn in conns:
            conn.close()
