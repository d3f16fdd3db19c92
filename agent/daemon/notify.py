"""sd_notify without dependencies: a datagram to $NOTIFY_SOCKET (no-op when unset)."""

from __future__ import annotations

import os
import socket

from agent.log import get_logger

log = get_logger(__name__)


def notify(state: str, socket_path: str | None = None) -> bool:
    """Send e.g. ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``; True when sent."""
    target = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not target:
        return False
    # A leading "@" names a socket in the abstract namespace.
    address = "\0" + target[1:] if target.startswith("@") else target
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify_failed", state=state, error=str(exc))
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC), or None when no watchdog is set."""
    raw = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not raw or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(raw) / 1e6 / 2
    except ValueError:
        return None
