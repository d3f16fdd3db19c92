"""The delivery benchmark's fleet harness runs end to end and labels what it measured.

A tiny run (3 devices over 2 processes, 0.5 MB): no speed is asserted, only that every
device really committed through the real update code and the figures are labelled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_transfer.py"


def test_fleet_harness_commits_every_device_and_labels_figures() -> None:
    cmd = [sys.executable, str(TOOL), "fleet", "--devices", "3", "--mb", "0.5", "--procs", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    doc = json.loads(done.stdout)  # one JSON object, nothing else on stdout
    assert doc["one"]["ok"] == 1
    assert doc["many"]["ok"] == 3
    assert doc["many"]["procs"] == 2
    bundle = doc["many"]["bundle_bytes"]
    assert doc["many"]["server_bytes"] >= bundle  # every byte went over the broker
    # What the chunk server answered: every device asked (index, then chunks), acks went out.
    assert doc["many"]["server_requests"] >= 2 * 3
    assert doc["many"]["server_acks"] >= 1
    assert doc["many"]["broker_drop_episodes"] == 0  # Mosquitto dropped nothing for anyone
    assert doc["a_target_met"] is (doc["a_measured_wall_ratio"] <= doc["a_target_ratio"])
    assert doc["c_device_cpu_ms_per_device"]["fleet"] > 0
    # Issue 19: the raw fan-out to as many receiver processes, measured in the same run.
    raw = doc["raw"]
    assert raw["subscribers"] == 3
    assert raw["ok"] == 3  # every receiver got every byte and the same SHA-256
    assert doc["raw_fanout_s"] == raw["seconds"] > 0
    assert doc["fanout_ratio"] == round(doc["many"]["seconds"] / raw["seconds"], 2)
    assert doc["egress_per_bundle"] == round(doc["many"]["server_bytes"] / bundle, 3)
    assert doc["egress_per_bundle"] >= 1.0
    broker_out = doc["broker_bytes_out"]
    assert broker_out["raw"] >= 3 * bundle  # the broker wrote every byte to each receiver
    assert broker_out["rollout"] >= doc["many"]["procs"] * bundle  # once per connection
    assert isinstance(doc["fanout_target_met"], bool)
    # What the chunk server's start wait saw: every device's first ask, the hold it chose.
    start = doc["many"]["server_start_wait"]
    assert start["askers"] == 3
    assert start["held_s"] >= 0
    # Where the device processes' and receivers' CPU went, per thread (fourth session).
    threads = doc["many"]["threads_per_device"]
    assert threads["update-service"]["cpu_ms"] > 0
    assert threads["mqtt"]["cpu_ms"] > 0
    assert threads["mqtt"]["slices"] >= 1
    assert doc["raw"]["threads_per_receiver"]["mqtt"]["cpu_ms"] > 0
    assert set(doc["many"]["cpu_ms_by_phase"]) == {"verify", "transfer", "install"}
    projection = doc["d_projection"]
    assert projection["label"].startswith("PROJECTION (not measured)")
    terms = ("device_s", "broker_s", "server_s")
    assert projection["seconds"] == pytest.approx(
        max(projection[t] for t in terms) + projection["install_s"], abs=0.002
    )


def test_e2e_ends_at_the_devices_terminal_op_state() -> None:
    """e2e time runs to the device's own terminal op state, as the fleet's does.

    Before, it ended when a 20 ms polling loop noticed the result (up to 20 ms late on a
    ~0.2 s run), while the raw denominator ends at its receiver's last byte.
    """
    cmd = [sys.executable, str(TOOL), "e2e", "--mb", "0.5"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    doc = json.loads(done.stdout)
    assert doc["ok"] == 1
    assert doc["seconds"] == doc["phases_s"]["done"]
    assert doc["phases_s"]["installing"] <= doc["seconds"]
