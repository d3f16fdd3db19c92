"""Root rotation reaches devices (issue 18, item 7).

Real Mosquitto, real keys, a real device (link + installer + update service). Before:
``edge-fleet root rotate`` published nothing, so the next bundle failed on every device
as ``unsigned``; a device that missed root N+1 and saw only N+2 stayed on N for good;
``edge-fleet publish`` put out bundles the fleet's devices could not verify.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.fleet.cli import main as fleet_main
from agent.fleet.mqttclient import FleetClient
from agent.update.trust.root import load_root_bytes
from tests.integration.test_delivery import (
    FLEET,
    TOPICS,
    make_bundle,
    start_device,
)
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker


def rotate(keys: Path, broker: MosquittoBroker | None) -> int:
    args = ["root", "rotate", str(keys), "--role", "release", "--role", "root"]
    if broker is not None:
        args += ["--broker", broker.url, "--fleet", FLEET]
    return fleet_main(args)


def provisioned_v1(keys: Path, where: Path) -> Path:
    """The root a device was provisioned with (the fleet's root.json moves on)."""
    where.mkdir()
    shutil.copyfile(keys / "roots" / "1.root.json", where / "root.json")
    return where


def test_device_that_missed_root_2_walks_to_root_3_and_takes_a_root_3_bundle(
    mosquitto, operator, keys, tmp_path, *, short_range_model, capsys
):
    provisioned = provisioned_v1(keys, tmp_path / "provisioned")
    # Two rotations while the device is away: root keys and release keys both change.
    assert rotate(keys, mosquitto) == 0
    assert rotate(keys, mosquitto) == 0
    latest = operator.client.retained(TOPICS.trust_root(FLEET))
    assert latest is not None
    assert load_root_bytes(latest).version == 3  # on trust/root the device sees only v3
    device = start_device(mosquitto, provisioned, tmp_path / "dev")
    try:
        assert wait_for(lambda: device.installer.trust.load_root().version == 3, timeout_s=10)
        # A bundle signed by root 3's release keys (root 1's are retired).
        bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 1, devices=["cam-1"])
        capsys.readouterr()
        code = fleet_main(
            ["publish", str(bundle), "--broker", mosquitto.url, "--timeout", "30", "--json"]
        )
        out = capsys.readouterr().out.strip().splitlines()[-1]
        assert code == 0, out
        assert json.loads(out)["devices"]["cam-1"]["status"] == "successful"
        assert device.installer.store.current_sha("detector") is not None
    finally:
        device.close()


def test_device_ignores_a_forged_link_and_walks_once_the_real_one_is_there(
    mosquitto, operator, keys, tmp_path
):
    provisioned = provisioned_v1(keys, tmp_path / "provisioned")
    assert rotate(keys, None) == 0  # v2, not published
    assert rotate(keys, None) == 0  # v3
    chain = {v: (keys / "roots" / f"{v}.root.json").read_bytes() for v in (1, 2, 3)}
    forged = json.loads(chain[2])
    forged["signatures"] = [{"keyid": "00" * 32, "sig": "11" * 64}]
    operator.client.publish_wait(
        TOPICS.trust_root_version(FLEET, 2), json.dumps(forged).encode(), retain=True
    )
    operator.client.publish_wait(TOPICS.trust_root_version(FLEET, 3), chain[3], retain=True)
    operator.client.publish_wait(TOPICS.trust_root(FLEET), chain[3], retain=True)
    device = start_device(mosquitto, provisioned, tmp_path / "dev")
    try:
        assert wait_for(lambda: device.service.unverified.total > 0, timeout_s=10)
        assert device.installer.trust.load_root().version == 1  # no walk through a forgery
        operator.client.publish_wait(TOPICS.trust_root_version(FLEET, 2), chain[2], retain=True)
        assert wait_for(lambda: device.installer.trust.load_root().version == 3, timeout_s=10)
    finally:
        device.close()


def test_publish_refuses_a_bundle_the_fleets_retained_root_does_not_trust(
    mosquitto, keys, tmp_path, short_range_model, capsys
):
    assert (
        fleet_main(["root", "publish", str(keys), "--broker", mosquitto.url, "--fleet", FLEET]) == 0
    )
    old_keys = make_bundle(keys, tmp_path / "old", short_range_model, 1)
    assert rotate(keys, None) == 0  # rotated offline, not published
    new_keys = make_bundle(keys, tmp_path / "new", short_range_model, 2)
    client = FleetClient(mosquitto.url).connect()
    try:
        capsys.readouterr()
        args = ["--broker", mosquitto.url, "--timeout", "5"]
        assert fleet_main(["publish", str(new_keys), *args]) == 1
        err = capsys.readouterr().err
        assert "retained root is v1" in err
        assert "root publish" in err
        assert client.retained(TOPICS.deploy(FLEET, "detector")) is None  # nothing went out
        # Once the chain is out, a bundle signed by the retired release keys is refused.
        assert (
            fleet_main(["root", "publish", str(keys), "--broker", mosquitto.url, "--fleet", FLEET])
            == 0
        )
        assert fleet_main(["publish", str(old_keys), *args]) == 1
        err = capsys.readouterr().err
        assert "not signed by the release keys of the fleet's root v2" in err
        assert client.retained(TOPICS.deploy(FLEET, "detector")) is None
    finally:
        client.close()
