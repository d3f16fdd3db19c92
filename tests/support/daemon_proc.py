"""Real ``edge-agent run`` processes for tests: spawn, wait for the socket, stop.

``Restarter`` plays systemd's ``Restart=on-failure`` (exit 75 → start again), so tests can
follow a daemon across the restarts a remote config or a revert makes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from agent.daemon.control import request
from agent.errors import AgentError
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
RESTART_EXIT_CODE = 75


def minimal_config(
    path: Path,
    *,
    broker_url: str,
    state_dir: Path,
    socket_path: Path,
    trust_root: Path | None = None,
    device: str = "",
    control: str = "",
    telemetry: str = "",
    extra: str = "",
) -> Path:
    """A daemon config with no camera and no model: starts in about a second. ``device``,
    ``control`` and ``telemetry`` are more keys of those tables; ``extra`` more tables
    (``door_camera``)."""
    text = f"""
        [device]
        id = "cam-001"
        fleet = "f1"
        {device}
        [mqtt]
        url = "{broker_url}"
        reconnect_min_s = 0.2
        reconnect_max_s = 1.0
        [storage]
        state_dir = "{state_dir}"
        [trust]
        root = "{trust_root or (path.parent / "no-root.json")}"
        [control]
        socket_path = "{socket_path}"
        {control}
        [telemetry]
        health_interval_s = 0.2
        {telemetry}
        [outbox]
        batch_interval_s = 0.05
        """
    path.write_text(textwrap.dedent(text) + textwrap.dedent(extra), encoding="utf-8")
    return path


def door_camera(clip: Path, model: Path) -> str:
    """TOML tables for camera ``door`` looping ``clip`` at 15 fps and the ``detector`` slot
    watching it with ``model`` (threshold 0.5): detections within seconds of the start."""
    return f"""
[[cameras]]
name = "door"
source = "file:{clip}"
fps = 15
loop = true
[[models]]
slot = "detector"
path = "{model}"
cameras = ["door"]
threshold = 0.5
"""


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT")}


def spawn(config: Path, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """The daemon; stderr (its log) appended to ``log_path``, else kept in a pipe."""
    command = [sys.executable, "-m", "agent", "run", "--config", str(config)]
    if log_path is None:
        return subprocess.Popen(
            command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO
        )
    with log_path.open("ab") as out:
        return subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=out, cwd=REPO)


def status(socket_path: Path, timeout_s: float = 2.0) -> dict[str, Any] | None:
    try:
        return request(socket_path, {"op": "status"}, timeout_s=timeout_s)
    except AgentError:
        return None


def wait_running(socket_path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    """The daemon's pid once its socket answers; fails the test if the process died."""
    ok = wait_for(lambda: proc.poll() is not None or status(socket_path) is not None, timeout_s)
    assert ok, "daemon did not come up"
    assert proc.poll() is None, f"daemon exited with {proc.returncode}"
    reply = status(socket_path)
    assert reply is not None
    return int(reply["daemon"]["pid"])


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


class Restarter:
    """Runs the daemon again whenever it exits 75, like systemd's Restart=on-failure."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.exits: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restarter", daemon=True)

    def start(self) -> Restarter:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.proc = spawn(self.config, self.log_path)
            rc = self.proc.wait()
            self.exits.append(rc)
            if rc != RESTART_EXIT_CODE:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        self._stopping.set()
        if self.proc is not None:
            stop(self.proc)
        self._thread.join(20)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
