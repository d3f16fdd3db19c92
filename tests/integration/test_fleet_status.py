"""Issue 17: `edge-fleet status` and `cmd` tell the operator the truth (real broker, devices)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agent.config.uplink import MqttConfig
from agent.fleet.cli import main as fleet_main
from agent.fleet.keys import init_keys
from agent.uplink.link import Link
from agent.uplink.topics import Topics as LinkTopics
from tests.integration.test_delivery import FLEET, ROOT, make_bundle, start_device

pytestmark = pytest.mark.broker


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


def other_fleet_device(url: str, state_dir: Path) -> tuple[Link, threading.Event]:
    stop = threading.Event()
    cfg = MqttConfig(url=url, reconnect_min_s=0.2, reconnect_max_s=1.0)
    link = Link(cfg, LinkTopics(ROOT, "cam-x", "f2"), state_dir, stop)
    link.start()
    assert link.wait_connected(10)
    return link, stop


def test_status_latest_op_across_deployments_fleet_filter_one_line(
    mosquitto, keys, tmp_path, short_range_model, capsys
):
    v1 = make_bundle(keys, tmp_path / "v1", short_range_model, 1)
    v2 = make_bundle(keys, tmp_path / "v2", short_range_model, 2)
    device = start_device(mosquitto, keys, tmp_path / "cam-a", device_id="cam-a")
    link, stop = other_fleet_device(mosquitto.url, tmp_path / "cam-x")
    try:
        base = ["--broker", mosquitto.url, "--timeout", "30", "--json"]
        assert fleet_main(["publish", str(v2), *base]) == 0
        # Forced older manifest: refused by the device with status_version 1, lower than
        # the successful v2's; it is still the newest thing that happened.
        assert fleet_main(["publish", str(v1), *base, "--force"]) == 1
        capsys.readouterr()
        assert fleet_main(["status", "--broker", mosquitto.url, "--fleet", FLEET, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["devices"]
        assert [r["device"] for r in rows] == ["cam-a"]  # cam-x is in fleet f2
        row = rows[0]
        assert row["fleet"] == FLEET
        assert row["online"] is True
        assert row["operation"]["op"] == f"model_update/{FLEET}-detector-1"
        assert row["operation"]["status"] == "failed"
        assert row["operation"]["reason"] in ("rollback", "version_conflict")
        assert row["active"]["detector"]["manifest_version"] == 2
        assert len(row["ops"]) == 2  # --json has everything

        assert fleet_main(["status", "--broker", mosquitto.url, "--fleet", FLEET]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"1 device(s), fleet {FLEET}"
        assert lines[1].split() == ["DEVICE", "FLEET", "ONLINE", "MODELS", "HEALTH", "LAST", "OP"]
        assert len(lines) == 3  # one line per device
        words = lines[2].split()
        assert words[:4] == ["cam-a", FLEET, "yes", "detector:v2"]
        assert f"model_update/{FLEET}-detector-1 failed (" in lines[2]
        assert lines[2].endswith("s ago")
        assert "{" not in lines[2]

        assert fleet_main(["status", "--broker", mosquitto.url, "--fleet", "f2", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["devices"]
        assert [r["device"] for r in rows] == ["cam-x"]
    finally:
        device.close()
        stop.set()
        link.stop()


def test_cmd_to_a_silent_device_says_so(mosquitto, keys, tmp_path, capsys):
    device = start_device(mosquitto, keys, tmp_path / "cam-a", device_id="cam-a")
    device.close()  # clean stop: its retained state says offline
    base = ["--broker", mosquitto.url, "--timeout", "1"]
    assert fleet_main(["cmd", "cam-a", "ping", *base]) == 1
    err = capsys.readouterr().err
    assert "no answer from cam-a in 1 s (last seen " in err
    assert err.rstrip().endswith("ago, offline)")
    assert fleet_main(["cmd", "cam-nobody", "ping", *base]) == 1
    err = capsys.readouterr().err
    assert "no answer from cam-nobody in 1 s (never seen on this broker" in err
