"""Issue 17: `edge-fleet publish`/`rollout` judge only the devices' answers to this publication.

Real Mosquitto, real devices (link + installer + update service on real files), the real
`edge-fleet` entry point.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.fleet.cli import main as fleet_main
from agent.fleet.keys import init_keys
from agent.fleet.mqttclient import FleetClient
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import parse_manifest
from tests.integration.test_delivery import FLEET, TOPICS, Device, make_bundle, start_device

pytestmark = pytest.mark.broker


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


def publish(broker_url: str, bundle: Path, *extra: str) -> int:
    return fleet_main(
        ["publish", str(bundle), "--broker", broker_url, "--timeout", "40", "--json", *extra]
    )


def last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out.strip().splitlines()
    doc: dict[str, object] = json.loads(out[-1])
    return doc


def held_version(broker_url: str) -> int:
    client = FleetClient(broker_url).connect()
    try:
        held = client.retained(TOPICS.deploy(FLEET, "detector"))
    finally:
        client.close()
    assert held is not None
    return parse_manifest(parse_envelope(held, 1 << 20).payload).manifest_version


def test_older_bundle_is_refused_then_forced_and_never_reported_successful(
    mosquitto, keys, tmp_path, short_range_model, capsys
):
    v1 = make_bundle(keys, tmp_path / "v1", short_range_model, 1)
    v4 = make_bundle(keys, tmp_path / "v4", short_range_model, 4)
    names = ["cam-a", "cam-b"]
    devices: list[Device] = []
    try:
        devices.extend(start_device(mosquitto, keys, tmp_path / n, device_id=n) for n in names)
        # v1 first, then v4: both answered successful by both devices.
        assert publish(mosquitto.url, v1) == 0
        assert publish(mosquitto.url, v4) == 0
        answers = last_json(capsys)["devices"]
        assert {d["status"] for d in answers.values()} == {"successful"}  # type: ignore[attr-defined]
        active = {d.device_id: d.installer.store.current_sha("detector") for d in devices}
        # v1 again: refused before anything is retained; the topic still holds v4.
        assert publish(mosquitto.url, v1) == 1
        err = capsys.readouterr().err
        assert "holds manifest v4" in err
        assert "--force" in err
        assert held_version(mosquitto.url) == 4
        # Forced: the devices' own answers to it are rollback refusals, never the earlier
        # retained `successful` of the same deployment id.
        assert publish(mosquitto.url, v1, "--force", "--answer-timeout", "10") == 1
        report = last_json(capsys)["devices"]
        assert set(report) == set(names)  # type: ignore[arg-type]
        for name in names:
            assert report[name]["status"] == "failed", report  # type: ignore[index]
            assert report[name]["reason"] in ("rollback", "version_conflict")  # type: ignore[index]
        # ...and v4 stays active on every device.
        assert {d.device_id: d.installer.store.current_sha("detector") for d in devices} == active
    finally:
        for device in devices:
            device.close()


def test_a_stopped_device_is_no_answer_never_successful(
    mosquitto, keys, tmp_path, short_range_model, capsys
):
    v1 = make_bundle(keys, tmp_path / "v1", short_range_model, 1)
    v2 = make_bundle(keys, tmp_path / "v2", short_range_model, 2)
    live = start_device(mosquitto, keys, tmp_path / "cam-a", device_id="cam-a")
    stopped = start_device(mosquitto, keys, tmp_path / "cam-b", device_id="cam-b")
    try:
        assert publish(mosquitto.url, v1) == 0
        stopped.close()
        # The fleet-wide manifest goes to the fleet's members (their retained states name
        # the fleet): cam-b's retained answer to v1 must not count for v2.
        assert publish(mosquitto.url, v2, "--answer-timeout", "3") == 1
        report = last_json(capsys)["devices"]
        assert report["cam-a"]["status"] == "successful"  # type: ignore[index]
        assert report["cam-b"]["status"] == "no_answer"  # type: ignore[index]
        # The same manifest again: cam-a answered it before (retained) and cam-b still
        # says nothing; an earlier answer is reported as such, never as this one's.
        assert publish(mosquitto.url, v2, "--answer-timeout", "2") == 1
        report = last_json(capsys)["devices"]
        assert report["cam-b"] == {
            "status": "no_answer",
            "reason": "no_answer",
            "status_version": 0,
        }
        assert report["cam-a"]["status"] == "no_answer"  # type: ignore[index]
        assert report["cam-a"]["earlier"] == "successful"  # type: ignore[index]
    finally:
        live.close()


def test_human_publish_output_names_every_device(
    mosquitto, keys, tmp_path, short_range_model, capsys
):
    v1 = make_bundle(keys, tmp_path / "v1", short_range_model, 1, devices=["cam-a", "cam-z"])
    live = start_device(mosquitto, keys, tmp_path / "cam-a", device_id="cam-a")
    try:
        code = fleet_main(["publish", str(v1), "--broker", mosquitto.url, "--answer-timeout", "2"])
        out = capsys.readouterr().out
        assert code == 1
        assert f"publishing {FLEET}-detector-1: manifest v1" in out
        assert "cam-a                successful" in out
        assert "cam-z                no_answer: no state for this manifest in 2 s" in out
        assert "2 device(s): 1 successful, 0 failed, 1 no answer" in out
    finally:
        live.close()


def test_rollout_prints_stages_and_counts_only_targeted_devices(
    mosquitto, keys, tmp_path, short_range_model, capsys
):
    names = ["cam-a", "cam-b", "cam-c"]
    bundle = make_bundle(keys, tmp_path / "b", short_range_model, 3, devices=names)
    devices: list[Device] = []
    try:
        devices.extend(start_device(mosquitto, keys, tmp_path / n, device_id=n) for n in names)
        code = fleet_main(
            [
                *("rollout", str(bundle), "--broker", mosquitto.url, "--keys", str(keys)),
                *("--canary", "1", "--timeout", "40"),
            ]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        # (devices log to stdout here: they run in this process)
        lines = out.splitlines()
        assert (
            f"stage 1/2 canary: 1 device(s) [cam-a], deployment {FLEET}-detector-3-canary, "
            "manifest v3"
        ) in lines
        assert "  1 device(s): 1 successful, 0 failed, 0 no answer" in lines
        assert (
            f"stage 2/2 rest: 2 device(s) [cam-b cam-c], deployment {FLEET}-detector-3, manifest v4"
        ) in lines
        assert "  2 device(s): 2 successful, 0 failed, 0 no answer" in lines
        # cam-b and cam-c rightly refused the canary manifest: not a failure, not listed.
        assert "not_targeted" not in out
        assert "failed (" not in out
    finally:
        for device in devices:
            device.close()
