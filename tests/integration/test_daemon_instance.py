"""One daemon per state dir and per control socket, with real ``edge-agent run`` processes.

Issue 17.5: a second daemon on the same state dir (or the same socket) must refuse to
start, naming the holder's pid, and never take the socket over. Issue 18.1(d): a
``control.socket_path`` that names a state file must be refused with the file intact.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.daemon.instance import holder
from tests.support.daemon_proc import minimal_config, spawn, status, stop, wait_running
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker


def refused(config: Path) -> tuple[int, str]:
    """Run a daemon that must refuse: its exit code and stderr (it must exit by itself)."""
    proc = spawn(config)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail("the second daemon started instead of refusing")
    return proc.returncode, err.decode(errors="replace")


def test_second_daemon_on_one_state_dir_refuses_naming_the_pid(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first_sock, second_sock = tmp_path / "run1" / "c.sock", tmp_path / "run2" / "c.sock"
    a = minimal_config(
        tmp_path / "a.toml", broker_url=mosquitto.url, state_dir=state, socket_path=first_sock
    )
    b = minimal_config(
        tmp_path / "b.toml", broker_url=mosquitto.url, state_dir=state, socket_path=second_sock
    )
    first = spawn(a)
    try:
        pid = wait_running(first_sock, first)
        assert holder(state) == pid
        rc, err = refused(b)
        assert rc != 0
        assert "already_running" in err
        assert f"pid {pid}" in err
        assert "Traceback" not in err
        assert not second_sock.exists()
        reply = status(first_sock)
        assert reply is not None
        assert reply["daemon"]["pid"] == pid
    finally:
        assert stop(first) == 0
    assert holder(state) is None  # released with the process


def test_second_daemon_on_one_socket_refuses_and_leaves_it_alone(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    sock = tmp_path / "run" / "control.sock"
    a = minimal_config(
        tmp_path / "a.toml", broker_url=mosquitto.url, state_dir=tmp_path / "s1", socket_path=sock
    )
    b = minimal_config(
        tmp_path / "b.toml", broker_url=mosquitto.url, state_dir=tmp_path / "s2", socket_path=sock
    )
    first = spawn(a)
    try:
        pid = wait_running(sock, first)
        rc, err = refused(b)
        assert rc != 0
        assert "already_running" in err
        assert str(sock) in err
        reply = status(sock)
        assert reply is not None
        assert reply["daemon"]["pid"] == pid
    finally:
        assert stop(first) == 0


@pytest.mark.parametrize("victim", ["trust/state.json", "outbox.db"])
def test_socket_path_on_a_state_file_is_refused_and_the_file_kept(
    mosquitto: MosquittoBroker, tmp_path: Path, victim: str
) -> None:
    state = tmp_path / "state"
    target = state / victim
    target.parent.mkdir(parents=True)
    target.write_bytes(b"precious state\n")
    cfg = minimal_config(
        tmp_path / "a.toml", broker_url=mosquitto.url, state_dir=state, socket_path=target
    )
    rc, err = refused(cfg)
    assert rc != 0
    assert "unsafe_path" in err
    assert "Traceback" not in err
    assert target.read_bytes() == b"precious state\n"


def test_socket_path_on_any_other_file_is_refused_and_the_file_kept(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    target = tmp_path / "etc" / "agent.key"
    target.parent.mkdir()
    target.write_bytes(b"not a socket\n")
    cfg = minimal_config(
        tmp_path / "a.toml",
        broker_url=mosquitto.url,
        state_dir=tmp_path / "state",
        socket_path=target,
    )
    rc, err = refused(cfg)
    assert rc != 0
    assert "unsafe_path" in err
    assert "not a socket" in err
    assert target.read_bytes() == b"not a socket\n"


def test_socket_in_a_folder_every_user_can_write_is_refused(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: any user could plant a socket where requests go
    sock = shared / "control.sock"
    cfg = minimal_config(
        tmp_path / "a.toml",
        broker_url=mosquitto.url,
        state_dir=tmp_path / "state",
        socket_path=sock,
    )
    rc, err = refused(cfg)
    assert rc != 0
    assert "unsafe_path" in err
    assert "every user can write" in err
    assert "Traceback" not in err
    assert not sock.exists()
