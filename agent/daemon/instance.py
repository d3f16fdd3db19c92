"""One daemon per state dir and per control socket.

Two daemons on one state dir fight over the MQTT session and the outbox; two on one
socket answer for each other. The state dir is claimed with an ``flock`` on
``<state_dir>/daemon.lock`` (released by the kernel when the process dies, so no stale
lock survives a crash) that holds the holder's pid. The socket path is checked before
anything starts: never inside the state dir, never replacing a file that is not a socket,
never replacing a socket somebody answers on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
from pathlib import Path

from agent.errors import InstanceError, Reason

LOCK_NAME = "daemon.lock"
PROBE_TIMEOUT_S = 1.0


class InstanceLock:
    """The held lock; ``release`` (or process exit) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


def _open_lock(path: Path) -> int:
    # O_NOFOLLOW: a symlink planted at the lock path must not make us truncate its target.
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        raise InstanceError(
            Reason.UNSAFE_PATH, f"cannot open the state dir lock {path}: {exc.strerror}"
        ) from exc


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def acquire(state_dir: Path) -> InstanceLock:
    """Claim ``state_dir`` for this process or raise InstanceError(already_running, pid=...)."""
    path = lock_path(state_dir)
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        who = f"pid {pid}" if pid else "an unknown process"
        raise InstanceError(
            Reason.ALREADY_RUNNING,
            f"another daemon ({who}) holds the state dir {state_dir} ({path})",
            pid=pid,
            path=str(path),
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return InstanceLock(fd, path)


def holder(state_dir: Path) -> int | None:
    """Pid of the daemon holding ``state_dir`` (0 when the pid is unknown); None when free.

    For the CLI: a held lock with no answering socket means "running, but unreachable".
    """
    path = lock_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        return None
    finally:
        os.close(fd)


def runtime_dirs(value: str) -> list[Path]:
    """``$RUNTIME_DIRECTORY`` as systemd sets it (``RuntimeDirectory=``; colon-separated)."""
    return [Path(part) for part in value.split(":") if part]


def runtime_dir_problem(
    socket_path: Path, runtime: list[Path], parent_mode: int | None
) -> str | None:
    """Why ``socket_path`` is not in a runtime dir of ours, or None (pure).

    Under systemd the socket must be inside the unit's ``RuntimeDirectory``. Anywhere,
    its folder must not be writable by everyone (``/tmp`` itself): there any user could
    put a socket of theirs where status and local update requests go.
    """
    if runtime and not any(_inside(socket_path, directory) for directory in runtime):
        places = ", ".join(str(d) for d in runtime)
        return (
            f"control.socket_path {socket_path} is outside the service's runtime "
            f"directory ({places})"
        )
    if parent_mode is not None and parent_mode & stat.S_IWOTH:
        return (
            f"control.socket_path {socket_path} is in {socket_path.parent}, which every user "
            "can write; use a runtime dir of the agent's own such as /run/edge-agent"
        )
    return None


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def answers(socket_path: Path, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a process accepts connections on ``socket_path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(socket_path))
        except OSError:
            return False
    return True


def check_socket_path(socket_path: Path, protected: list[Path]) -> None:
    """Refuse a socket path that would replace something not ours; remove a dead socket.

    ``protected``: directories the socket may never live in (the state dir).
    """
    for directory in protected:
        if _inside(socket_path, directory):
            raise InstanceError(
                Reason.UNSAFE_PATH,
                f"control.socket_path {socket_path} is inside {directory}; "
                "put it in a runtime dir such as /run/edge-agent",
                path=str(socket_path),
            )
    try:
        parent_mode: int | None = socket_path.parent.stat().st_mode
    except FileNotFoundError:
        parent_mode = None  # the control server creates it 0750
    problem = runtime_dir_problem(
        socket_path, runtime_dirs(os.environ.get("RUNTIME_DIRECTORY", "")), parent_mode
    )
    if problem is not None:
        raise InstanceError(Reason.UNSAFE_PATH, problem, path=str(socket_path))
    try:
        info = os.lstat(socket_path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise InstanceError(
            Reason.UNSAFE_PATH,
            f"control.socket_path {socket_path} exists and is not a socket; left as it is",
            path=str(socket_path),
        )
    if answers(socket_path):
        raise InstanceError(
            Reason.ALREADY_RUNNING,
            f"another daemon answers on the control socket {socket_path}",
            path=str(socket_path),
        )
    # A socket nobody listens on: what a killed daemon leaves behind.
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
