"""The console's rollouts without a browser: a real broker, real update devices, real bundles."""

from __future__ import annotations

import pytest

from agent.errors import AgentError
from agent.fleet.console.rollouts import Deployments
from agent.fleet.keys import init_keys
from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import load_bundle
from tests.integration.test_delivery import TOPICS, make_bundle, start_device
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker


def test_operator_halt_stops_the_rollout_before_the_next_stage(
    mosquitto, tmp_path, short_range_model
):
    keys = tmp_path / "keys"
    init_keys(keys)
    canary = make_bundle(keys, tmp_path / "c", short_range_model, 2, devices=["cam-a"])
    rest = make_bundle(keys, tmp_path / "r", short_range_model, 3, devices=["cam-b"])
    devices = [start_device(mosquitto, keys, tmp_path / n, device_id=n) for n in ("cam-a", "cam-b")]
    client = FleetClient(mosquitto.url).connect()
    deployments = Deployments(client, TOPICS, answer_s=10)
    try:
        rollout = deployments.start([load_bundle(canary), load_bundle(rest)], 1)
        # One rollout per fleet and slot at a time (they would share the deploy topic).
        with pytest.raises(AgentError, match="fleet f1, slot detector is still running"):
            deployments.start([load_bundle(rest)], 1)
        deployments.halt(rollout.id)
        assert wait_for(lambda: rollout.status != "running", 20)
        view = rollout.view()
        assert view["status"] == "halted"
        assert "halted by the operator" in view["halt_reason"]
        assert view["halt_rule_fired"] is False
        assert [s["status"] for s in view["stages"]] == ["halted", "not_started"]
        # The rest stage's manifest was never published: cam-b has nothing installed.
        assert client.retained(TOPICS.deploy("f1", "detector")) is not None  # the canary's
        assert devices[1].installer.store.current_sha("detector") is None
        # Publishing a manifest older than the one retained is refused with the reason.
        again = deployments.start(
            [load_bundle(make_bundle(keys, tmp_path / "o", short_range_model, 1))], 1
        )
        assert wait_for(lambda: again.status != "running", 10)
        assert again.status == "error"
        assert "older" in again.halt_reason
    finally:
        deployments.close()
        client.close()
        for device in devices:
            device.close()
