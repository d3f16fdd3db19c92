"""edge-fleet against a real Mosquitto and several device instances in this process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.fleet.cli import main as fleet_main
from agent.fleet.keys import init_keys
from agent.update.store.probe import OfflineProbe, TrialResult
from agent.update.trust.manifest import Manifest
from tests.integration.test_delivery import (
    FLEET,
    TOPICS,
    Device,
    make_bundle,
    start_device,
)

pytestmark = pytest.mark.broker


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


class BrokenRuntimeProbe(OfflineProbe):
    """Stands in for a device whose runtime cannot run the new model (a real trial failure
    needs hardware we do not have here); everything else on this device is real."""

    def trial(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        real = super().trial(slot, model_path, manifest)
        return TrialResult(ok=False, detail=f"delegate failed on this board ({real.detail})")


def _wait(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_canary_rollout_halts_when_a_canary_fails_its_trial(
    mosquitto, keys, tmp_path, short_range_model, capsys
):
    names = ["cam-a", "cam-b", "cam-c", "cam-d"]
    bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 3, devices=names)
    devices: list[Device] = []
    try:
        for name in names:
            probe = BrokenRuntimeProbe() if name == "cam-b" else OfflineProbe()
            devices.append(
                start_device(mosquitto, keys, tmp_path / name, device_id=name, probe=probe)
            )
        code = fleet_main(
            [
                "rollout",
                str(bundle),
                "--broker",
                mosquitto.url,
                "--keys",
                str(keys),
                "--canary",
                "2",
                "--halt-on-failures",
                "1",
                "--timeout",
                "40",
                "--json",
            ]
        )
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 1
        assert report["halted"]["stage"] == "canary"
        assert report["halted"]["failed"] == ["cam-b"]
        canary = report["stages"][0]["devices"]
        assert canary["cam-a"]["status"] == "successful"
        assert canary["cam-b"]["status"] == "failed"
        assert canary["cam-b"]["reason"] == "health_failed"
        assert "delegate failed" in canary["cam-b"]["detail"]
        # Devices the canary rightly does not target are not counted, nor listed as failed.
        assert set(canary) == {"cam-a", "cam-b"}
        by_name = {d.device_id: d for d in devices}
        assert by_name["cam-a"].installer.store.current_sha("detector") is not None
        assert by_name["cam-b"].installer.store.current_sha("detector") is None  # rolled back
        # The rest never got the model: the canary manifest did not target them.
        for name in ("cam-c", "cam-d"):
            assert by_name[name].installer.store.current_sha("detector") is None
            assert not list((by_name[name].state_dir / "transfer").glob("*/files"))
    finally:
        for device in devices:
            device.close()


def test_heartbeat_freshness_alarm_and_status_json(
    mosquitto, keys, tmp_path, short_range_model, capsys
):
    device = start_device(mosquitto, keys, tmp_path / "dev", freshness_check_s=0.2)
    try:
        # A heartbeat that expires in ~4 s: first fresh, then expired -> freeze_suspected.
        # (Long enough that a loaded machine still sees it fresh at the first check.)
        code = fleet_main(
            [
                "heartbeat",
                "--keys",
                str(keys),
                "--fleet",
                FLEET,
                "--broker",
                mosquitto.url,
                "--expires-in",
                str(4.0 / 86400),
            ]
        )
        assert code == 0
        _wait(lambda: device.service.freshness.newest is not None)
        # The check runs on the service thread after the message is stored: wait for it.
        _wait(lambda: device.service.freshness.alarm_active is not None)
        assert device.service.freshness.alarm_active is False
        _wait(lambda: device.service.freshness.alarm_active is True, timeout_s=15)
        capsys.readouterr()
        assert fleet_main(["status", "--broker", mosquitto.url, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["devices"]
        row = next(r for r in rows if r["device"] == "cam-1")
        assert row["online"] is True
        assert row["alarms"] == ["freeze_suspected"]
        # A fresh heartbeat clears the alarm (an older one would not: versions only go up).
        assert (
            fleet_main(
                [
                    "heartbeat",
                    "--keys",
                    str(keys),
                    "--fleet",
                    FLEET,
                    "--broker",
                    mosquitto.url,
                    "--version",
                    str(int(time.time()) + 10),
                ]
            )
            == 0
        )
        _wait(lambda: device.service.freshness.alarm_active is False, timeout_s=10)
        assert TOPICS.alarm("cam-1", "freeze_suspected").endswith("/a/freeze_suspected")
    finally:
        device.close()
