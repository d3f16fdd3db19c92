"""Issue 17.7: the support bundle holds the agent's own recent log (not only the journal),
from a bounded ring file in the state dir."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from agent import log
from agent.config import load_config
from agent.diag.bundle import write_bundle
from agent.diag.runner import run_checks
from tests.support.waiting import wait_for


def no_journal(_argv: list[str]) -> tuple[int, str]:
    return 0, "-- No entries --\n"


def test_daemon_keeps_its_log_and_the_bundle_ships_it(tmp_path: Path, write_config):
    state = tmp_path / "state"
    cfg = write_config(f"""
[device]
id = "cam-9"
[mqtt]
url = "mqtt://127.0.0.1:9"
password = "hunter2-secret"
username = "u"
[storage]
state_dir = "{state}"
[control]
socket_path = "{tmp_path / "control.sock"}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ring = state / log.RING_FILE
    try:
        assert wait_for(
            lambda: ring.exists() and "mqtt_connect_attempt" in ring.read_text(), timeout_s=20
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    loaded = load_config(cfg)
    path = write_bundle(tmp_path / "b", run_checks(loaded, ["config"]), loaded, no_journal)
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/agent.log"))
        text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    assert '"event": "mqtt_connect_attempt"' in text
    assert "hunter2-secret" not in text


def test_the_ring_is_bounded(tmp_path: Path):
    ring = tmp_path / "state" / log.RING_FILE
    log.configure(level="info", fmt="json", stream=io.StringIO(), ring_path=ring)
    try:
        logger = log.get_logger("test.ring")
        line = "x" * 1000
        started = time.monotonic()
        for n in range(3 * log.RING_MAX_BYTES // 1000):
            logger.info("filler", n=n, text=line)
        assert time.monotonic() - started < 20
        files = sorted(ring.parent.iterdir())
        assert [f.name for f in files] == ["agent.log", "agent.log.1"]
        assert all(f.stat().st_size <= log.RING_MAX_BYTES + 2000 for f in files)
    finally:
        log.configure(level="warning")
