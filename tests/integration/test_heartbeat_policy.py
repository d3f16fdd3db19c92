"""Fleet policy ``block_on_stale_heartbeat`` (issue 18, item 9).

Real Mosquitto, real keys, a real device. Today an expired (or missing) heartbeat only
raises ``a/freeze_suspected``; with the policy on, a device refuses new deployments
(``failed``/``expired``) while its newest signed heartbeat is stale, and takes the held
deployment as soon as a fresh heartbeat arrives. Off (the default), nothing changes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.fleet.cli import main as fleet_main
from tests.integration.test_delivery import (
    FLEET,
    TOPICS,
    make_bundle,
    publish,
    serve,
    start_device,
)
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker


def heartbeat(keys: Path, broker: MosquittoBroker, expires_in_days: float) -> None:
    args = ["heartbeat", "--keys", str(keys), "--fleet", FLEET, "--broker", broker.url]
    args += ["--expires-in", str(expires_in_days), "--version", str(time.time_ns())]
    assert fleet_main(args) == 0


def test_stale_heartbeat_holds_deployments_until_a_fresh_one_arrives(
    mosquitto, operator, keys, tmp_path, short_range_model
):
    bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 1)
    server, server_stop = serve(operator, bundle)
    heartbeat(keys, mosquitto, 1.0 / 86400)  # valid for one second
    time.sleep(1.2)
    device = start_device(
        mosquitto, keys, tmp_path / "dev", block_on_stale_heartbeat=True, freshness_check_s=0.2
    )
    try:
        dep = publish(operator, bundle)
        held = operator.wait_terminal("cam-1", dep, timeout_s=10)
        assert (held["status"], held["reason"]) == ("failed", "expired"), held
        assert "heartbeat" in str(held["detail"])
        assert device.installer.store.current_sha("detector") is None
        heartbeat(keys, mosquitto, 1.0)  # fresh: the held deployment goes ahead by itself
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            docs = operator.docs("cam-1", dep)
            if docs and docs[-1]["status"] == "successful":
                break
            time.sleep(0.05)
        assert operator.docs("cam-1", dep)[-1]["status"] == "successful"
        assert device.installer.store.current_sha("detector") is not None
    finally:
        device.close()
        server_stop.set()
        server.join()


def test_without_the_policy_a_stale_heartbeat_only_alarms(
    mosquitto, operator, keys, tmp_path, short_range_model
):
    bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 1)
    server, server_stop = serve(operator, bundle)
    heartbeat(keys, mosquitto, 1.0 / 86400)
    time.sleep(1.2)
    device = start_device(mosquitto, keys, tmp_path / "dev", freshness_check_s=0.2)
    try:
        dep = publish(operator, bundle)
        assert operator.wait_terminal("cam-1", dep, timeout_s=20)["status"] == "successful"
        alarm = operator.client.retained(TOPICS.alarm("cam-1", "freeze_suspected"))
        assert alarm is not None
    finally:
        device.close()
        server_stop.set()
        server.join()
