"""Where the control socket may live (issue 18.1 d): the decision is pure, checked here."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.daemon.instance import check_socket_path, runtime_dir_problem, runtime_dirs
from agent.errors import InstanceError, Reason

OWN_DIR = stat.S_IFDIR | 0o750
SHARED_TMP = stat.S_IFDIR | 0o1777


def test_systemd_runtime_directory_is_parsed_like_systemd_sets_it() -> None:
    assert runtime_dirs("") == []
    assert runtime_dirs("/run/edge-agent") == [Path("/run/edge-agent")]
    assert runtime_dirs("/run/a:/run/b") == [Path("/run/a"), Path("/run/b")]


def test_under_systemd_the_socket_must_be_in_the_runtime_directory(tmp_path: Path) -> None:
    runtime = [tmp_path / "run" / "edge-agent"]
    inside = runtime[0] / "control.sock"
    outside = tmp_path / "elsewhere" / "control.sock"
    assert runtime_dir_problem(inside, runtime, OWN_DIR) is None
    problem = runtime_dir_problem(outside, runtime, OWN_DIR)
    assert problem is not None
    assert "outside the service's runtime directory" in problem


def test_a_folder_every_user_can_write_is_refused_anywhere(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    assert runtime_dir_problem(sock, [], SHARED_TMP) is not None
    assert runtime_dir_problem(sock, [], OWN_DIR) is None
    assert runtime_dir_problem(sock, [], stat.S_IFDIR | 0o770) is None  # a group is a choice
    assert runtime_dir_problem(sock, [], None) is None  # created 0750 by the server


def test_check_socket_path_reads_the_environment_and_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "run"
    own.mkdir(mode=0o750)
    own.chmod(0o750)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(own))
    check_socket_path(own / "control.sock", [tmp_path / "state"])
    with pytest.raises(InstanceError) as caught:
        check_socket_path(tmp_path / "other" / "control.sock", [tmp_path / "state"])
    assert caught.value.reason is Reason.UNSAFE_PATH
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    own.chmod(0o777)
    with pytest.raises(InstanceError) as caught:
        check_socket_path(own / "control.sock", [tmp_path / "state"])
    assert "every user can write" in caught.value.message
