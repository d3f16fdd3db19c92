"""The command channel cannot be turned into an amplifier (issue 18, item 3).

A real daemon (Supervisor with a fake pipeline) on a real Mosquitto. Before: every
request was echoed into its retained op state and into ``commands.json`` (a 10 MB
command made a 10 MB retained message and file), a burst beyond the queue was dropped
without an answer, and deeply nested JSON crashed the dispatcher (no state at all).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from tests.integration.mqtt_helpers import Recorder
from tests.integration.test_daemon_supervisor import TOPICS, make_supervisor, op_states, send
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker
BURST = 1000


def terminal(rec: Recorder, op: str, cmd_id: str) -> dict[str, Any] | None:
    states = [s for s in op_states(rec, op, cmd_id) if s["status"] in ("successful", "failed")]
    return states[-1] if states else None


def retained_size(rec: Recorder, op: str, cmd_id: str) -> int:
    return max(len(p) for p in rec.on(TOPICS.op(op, cmd_id)))


def wait_ready(broker: MosquittoBroker, rec: Recorder) -> None:
    """The daemon answers commands (its subscription exists only once it has connected)."""
    for n in range(40):
        send(broker, "ping", f"warm-{n}", b"{}")
        if rec.wait_for(lambda n=n: terminal(rec, "ping", f"warm-{n}") is not None, 0.5):
            return
    raise AssertionError("the daemon never answered a ping")


@pytest.fixture
def daemon(mosquitto: MosquittoBroker, tmp_path: Path, write_config, clean_env):
    sup = make_supervisor(mosquitto, tmp_path, write_config)
    runner = threading.Thread(target=sup.run, name="test-daemon")
    runner.start()
    try:
        yield sup
    finally:
        sup.stop_event.set()
        runner.join(20)


def test_large_and_nested_requests_are_refused_and_never_echoed(
    mosquitto: MosquittoBroker, daemon
) -> None:
    rec = Recorder(mosquitto.url, f"{TOPICS.base}/op/#")
    try:
        wait_ready(mosquitto, rec)
        big = json.dumps({"pad": "x" * (1 << 20)}).encode()  # 1 MiB
        send(mosquitto, "ping", "big", big)
        nested = b'{"a":' * 5000 + b"1" + b"}" * 5000  # under the size cap, too deep
        send(mosquitto, "ping", "deep", nested)
        near = json.dumps({"pad": "y" * (60 * 1024)}).encode()  # under the 64 KiB cap
        for n in range(5):  # accepted requests just under the cap: answered, not echoed
            send(mosquitto, "ping", f"near-{n}", near)
        ids = ["big", "deep", *(f"near-{n}" for n in range(5))]
        assert rec.wait_for(lambda: all(terminal(rec, "ping", i) for i in ids), timeout_s=10), [
            i for i in ids if not terminal(rec, "ping", i)
        ]
        big_state = terminal(rec, "ping", "big")
        assert big_state is not None
        assert (big_state["status"], big_state["reason"]) == ("failed", "too_large")
        assert big_state["request"]["bytes"] == len(big)
        deep_state = terminal(rec, "ping", "deep")
        assert deep_state is not None
        assert (deep_state["status"], deep_state["reason"]) == ("failed", "malformed")
        for cmd_id in ids:
            assert retained_size(rec, "ping", cmd_id) < 2048, cmd_id  # ids and digests only
        history = daemon.state_dir / "commands.json"
        assert history.stat().st_size < 16 * 1024
        assert "xxxx" not in history.read_text()
        assert "yyyy" not in history.read_text()
    finally:
        rec.close()


def test_a_burst_gets_an_answer_for_every_command(mosquitto: MosquittoBroker, daemon) -> None:
    rec = Recorder(mosquitto.url, f"{TOPICS.base}/op/#")
    try:
        wait_ready(mosquitto, rec)
        msgs = [
            {"topic": TOPICS.cmd("ping", f"b{n}"), "payload": b"{}", "qos": 1} for n in range(BURST)
        ]
        mqtt_publish.multiple(msgs, port=mosquitto.port)
        ids = [f"b{n}" for n in range(BURST)]
        assert rec.wait_for(lambda: all(terminal(rec, "ping", i) for i in ids), timeout_s=30), sum(
            1 for i in ids if terminal(rec, "ping", i)
        )
        finals = [terminal(rec, "ping", i) for i in ids]
        ok = [f for f in finals if f and f["status"] == "successful"]
        busy = [f for f in finals if f and f.get("reason") == "busy"]
        assert len(ok) + len(busy) == BURST
        assert ok  # the first ones ran
        assert busy  # and the rest were told to come back, not dropped
        assert all(f["retry_after_s"] > 0 for f in busy)
        # A busy id was not remembered: sent again after a pause, it runs.
        retry_id = busy[-1]["cmd_id"]
        before = len(op_states(rec, "ping", retry_id))
        rec.wait_for(lambda: False, timeout_s=busy[-1]["retry_after_s"] + 0.5)
        send(mosquitto, "ping", retry_id, b"{}")
        assert rec.wait_for(
            lambda: (
                len(op_states(rec, "ping", retry_id)) > before
                and op_states(rec, "ping", retry_id)[-1]["status"] == "successful"
            )
        )
    finally:
        rec.close()
