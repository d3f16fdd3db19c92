"""Local control socket: the running daemon answers status and diag requests over a Unix socket.

Protocol: one JSON object on one line in, one JSON object on one line out, then
the server closes. Ops: ``status``, ``diag``, ``update_*``; anything else answers
``{"ok": false, "error": "unknown_operation"}``.

Each connection gets its own thread and deadlines (the request line within
``REQUEST_DEADLINE_S``, the reply within ``REPLY_DEADLINE_S``), so idle or slow
clients never keep ``status`` from answering; past ``MAX_CONNECTIONS`` at once a new
client is told ``busy`` at once instead of waiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.daemon.instance import check_socket_path
from agent.errors import DaemonNotRunningError, TransportError
from agent.log import get_logger

log = get_logger(__name__)

SOCKET_MODE = 0o660
MAX_REQUEST_BYTES = 64 * 1024
MAX_CONNECTIONS = 16
REQUEST_DEADLINE_S = 5.0
REPLY_DEADLINE_S = 10.0
Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _read_line(conn: socket.socket, limit: int, deadline_s: float | None = None) -> bytes:
    """One line; with ``deadline_s`` the whole line (not each recv) must arrive in time."""
    buf = bytearray()
    end = None if deadline_s is None else time.monotonic() + deadline_s
    while b"\n" not in buf and len(buf) < limit:
        if end is not None:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("request line not complete before the deadline")
            conn.settimeout(left)
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf.extend(chunk)
    return bytes(buf).split(b"\n", 1)[0]


def request(socket_path: Path, payload: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon and return its reply.

    Raises DaemonNotRunningError when the socket is absent or refuses the connection.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            raise DaemonNotRunningError(
                f"daemon not running: no control socket at {socket_path}", path=str(socket_path)
            ) from exc
        try:
            sock.sendall(json.dumps(payload).encode("utf-8") + b"\n")
            line = _read_line(sock, 64 * 1024 * 1024)
        except OSError as exc:
            raise TransportError(f"control socket {socket_path}: {exc}") from exc
    finally:
        sock.close()
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise TransportError(f"control socket {socket_path}: reply is not JSON") from exc
    if not isinstance(reply, dict):
        raise TransportError(f"control socket {socket_path}: reply is not a JSON object")
    return reply


def dispatch(handlers: dict[str, Handler], raw: bytes) -> dict[str, Any]:
    """Decide the reply to one request line (pure apart from what the handlers do)."""
    try:
        req = json.loads(raw)
    except ValueError:
        return {"ok": False, "error": "malformed"}
    if not isinstance(req, dict):
        return {"ok": False, "error": "malformed"}
    handler = handlers.get(str(req.get("op", "")))
    if handler is None:
        return {"ok": False, "error": "unknown_operation"}
    try:
        return handler(req)
    except Exception as exc:
        log.warning("control_handler_failed", op=req.get("op"), error=str(exc))
        return {"ok": False, "error": "internal", "detail": str(exc)}


class ControlServer:
    """Serves the control socket from one thread until ``stop`` is set."""

    def __init__(
        self,
        socket_path: Path,
        handlers: dict[str, Handler],
        stop: threading.Event,
        protected: list[Path] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.protected = protected or []
        self.handlers = handlers
        self._stop = stop
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def start(self) -> None:
        # Like systemd's RuntimeDirectoryMode=0750: the agent's own runtime dir, not shared.
        self.socket_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        # Never unlink a file that is not a socket, nor a socket another daemon answers on.
        check_socket_path(self.socket_path, self.protected)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Create the socket with no access for others, then widen to the group only.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.socket_path))
        finally:
            os.umask(old_umask)
        self.socket_path.chmod(SOCKET_MODE)
        sock.listen(MAX_CONNECTIONS)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()
        log.info("control_listening", path=str(self.socket_path))

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stop.is_set():
                    log.warning("control_accept_failed", error=str(exc))
                return
            if not self._slots.acquire(blocking=False):
                self._refuse_busy(conn)
                continue
            worker = threading.Thread(
                target=self._answer_and_close, args=(conn,), name="control-conn", daemon=True
            )
            worker.start()

    def _refuse_busy(self, conn: socket.socket) -> None:
        log.warning("control_busy", limit=MAX_CONNECTIONS)
        with conn, contextlib.suppress(OSError):
            conn.settimeout(0.5)
            conn.sendall(b'{"ok": false, "error": "busy"}\n')

    def _answer_and_close(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._answer(conn)
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> None:
        try:
            raw = _read_line(conn, MAX_REQUEST_BYTES, REQUEST_DEADLINE_S)
            reply = dispatch(self.handlers, raw)
            conn.settimeout(REPLY_DEADLINE_S)
            conn.sendall(json.dumps(reply, default=str).encode("utf-8") + b"\n")
        except Exception as exc:
            log.warning("control_request_failed", error=str(exc))

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
