"""Issue 17.9: a device holding a manifest nobody serves backs off instead of chattering."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.fleet.keys import init_keys
from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import load_bundle
from tests.integration.test_delivery import FLEET, TOPICS, Operator, make_bundle, start_device

pytestmark = pytest.mark.broker


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


def test_no_chunk_server_backs_off_and_logs_once(
    mosquitto, keys, tmp_path, short_range_model, log_events
):
    bundle = make_bundle(keys, tmp_path / "b", short_range_model, 1)
    device = start_device(mosquitto, keys, tmp_path / "dev", deadline_s=60.0)
    operator = Operator(FleetClient(mosquitto.url).connect())
    operator.client.subscribe(TOPICS.model_update_filter(), operator.on_state)
    try:
        served = load_bundle(bundle)
        operator.client.publish_wait(
            TOPICS.deploy(FLEET, "detector"), served.envelope_bytes, retain=True
        )
        time.sleep(6.5)
        docs = operator.docs("cam-1", served.deployment_id)
    finally:
        device.close()
        operator.client.close()
    downloading = [d for d in docs if d["status"] == "downloading"]
    # Every second would be 7 reports; backing off 1, 2, 4 s gives 3 or 4.
    assert 2 <= len(downloading) <= 4, [round(float(d["ts"]), 1) for d in downloading]
    said = [
        e
        for e in log_events
        if e["event"] == "model_update_state"
        and e.get("status") == "downloading"
        and e["log_level"] == "info"
    ]
    assert len(said) == 1
