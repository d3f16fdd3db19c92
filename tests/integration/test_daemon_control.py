"""The control socket protocol: one JSON line in, one JSON line out, with a real Unix socket."""

from __future__ import annotations

import json
import socket
import stat
import threading
from pathlib import Path

import pytest

from agent.daemon.control import ControlServer, request
from agent.errors import DaemonNotRunningError


@pytest.fixture
def server(tmp_path: Path):
    stop = threading.Event()
    calls: list[dict] = []

    def status(req: dict) -> dict:
        calls.append(req)
        return {"ok": True, "daemon": {"pid": 1}}

    def boom(req: dict) -> dict:
        raise RuntimeError("handler broke")

    srv = ControlServer(tmp_path / "run" / "control.sock", {"status": status, "boom": boom}, stop)
    srv.start()
    yield srv, calls
    srv.stop()


def test_status_round_trip_and_mode(server) -> None:
    srv, calls = server
    reply = request(srv.socket_path, {"op": "status"})
    assert reply == {"ok": True, "daemon": {"pid": 1}}
    assert calls == [{"op": "status"}]
    assert stat.S_IMODE(srv.socket_path.stat().st_mode) == 0o660


def test_unknown_op_and_failing_handler(server) -> None:
    srv, _ = server
    assert request(srv.socket_path, {"op": "reboot"}) == {
        "ok": False,
        "error": "unknown_operation",
    }
    failed = request(srv.socket_path, {"op": "boom"})
    assert failed["ok"] is False
    assert "handler broke" in failed["detail"]


def test_malformed_line_gets_an_answer(server) -> None:
    srv, _ = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(srv.socket_path))
        sock.sendall(b"{not json\n")
        line = sock.makefile("rb").readline()
    assert json.loads(line) == {"ok": False, "error": "malformed"}


def test_absent_socket_means_not_running(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunningError) as info:
        request(tmp_path / "nothing.sock", {"op": "status"})
    assert info.value.exit_code == 3


def test_stale_socket_file_refuses(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the file stays, nobody listens: what a crashed daemon leaves behind
    with pytest.raises(DaemonNotRunningError):
        request(path, {"op": "status"})
