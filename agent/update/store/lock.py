"""One installer at a time: an ``flock`` on the state directory itself.

The daemon (MQTT deployments, local commands through its control socket) and the CLI's
on-disk path (daemon down) both take it around every step that reads or writes the
journal, the ``current``/``previous`` pointers or the trust state, so two installers can
never interleave. The kernel drops it when the holder dies: no stale lock after a crash.
The directory is locked rather than a lock file so that a rejected update leaves the
state dir's files exactly as they were. Re-entrant per ``InstallLock`` object (``install``
calls ``recover``); threads holding separate objects exclude each other like processes do
(one open file description each).
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from agent.errors import InstallBusyError

POLL_S = 0.05
# Who holds which state dir in this process (for the busy message; others are "another").
_HOLDERS: dict[str, str] = {}

P = ParamSpec("P")
R = TypeVar("R")


class InstallLock:
    def __init__(self, state_dir: Path, owner: str = "") -> None:
        self.path = state_dir
        self.owner = owner or f"pid {os.getpid()}"
        self._local = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds it, when it is this process; empty when unknown (another process)."""
        return _HOLDERS.get(str(self.path), "")

    @contextmanager
    def held(self, wait_s: float | None = None) -> Iterator[None]:
        """Hold it; wait up to ``wait_s`` (None: as long as it takes), then InstallBusyError."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        if not self._local.acquire(timeout=-1 if wait_s is None else max(wait_s, 0.0)):
            raise self._busy()
        try:
            if self._depth == 0:
                self._fd = self._take(deadline)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    _HOLDERS.pop(str(self.path), None)
                    os.close(self._fd)  # drops the flock
                    self._fd = None
        finally:
            self._local.release()

    def _take(self, deadline: float | None) -> int:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise self._busy() from None
                time.sleep(POLL_S)
        _HOLDERS[str(self.path)] = self.owner
        return fd

    def _busy(self) -> InstallBusyError:
        who = self.holder() or "another process"
        return InstallBusyError(
            f"another install, rollback or recovery is in progress ({who}); try again later",
            holder=who,
            path=str(self.path),
        )


class HoldsInstallLock(Protocol):
    install_lock: InstallLock


S = TypeVar("S", bound=HoldsInstallLock)


def locked(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Run an installer method holding its install lock (waiting for it as long as needed)."""

    @functools.wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.install_lock.held():
            return method(self, *args, **kwargs)

    return wrapper
