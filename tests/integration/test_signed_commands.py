"""Signed config commands against a real Mosquitto and a real daemon process (issue 18.1 c).

The fleet's root (provisioned on the device) lists a ``command`` role with a threshold
of 2: an unsigned config command, one signed with the release keys, one for another
device and a replay are refused with their reasons and store nothing; ``edge-fleet cmd
--sign`` gets one through (``successful`` is the device's own answer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.desired import desired_path
from agent.fleet.cli import main
from agent.fleet.keys import init_keys, rotate_root, signers_for
from agent.update.store.truststore import load_root_file
from agent.update.trust.command import make_command
from agent.uplink.topics import Topics
from tests.integration.mqtt_helpers import Recorder
from tests.integration.test_remote_config_trial import final, send_config
from tests.support.daemon_proc import Restarter, minimal_config, status
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker
TOPICS = Topics("ea/v1", "cam-001", "f1")
# An allowed key set to its current value: accepted without a restart.
REQUEST = {"version": 1, "config": {"logging": {"level": "info"}}}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    init_keys(keys)
    rotate_root(keys, roles=["command"], thresholds={"command": 2})
    return keys


@pytest.fixture
def device(
    mosquitto: MosquittoBroker, tmp_path: Path, keys: Path
) -> Iterator[tuple[Path, Recorder]]:
    sock = tmp_path / "run" / "control.sock"
    cfg = minimal_config(
        tmp_path / "agent.toml",
        broker_url=mosquitto.url,
        state_dir=tmp_path / "state",
        socket_path=sock,
        trust_root=keys / "roots" / "2.root.json",
    )
    rec = Recorder(mosquitto.url, f"{TOPICS.base}/#")
    daemon = Restarter(cfg, tmp_path / "daemon.log").start()
    try:
        assert wait_for(lambda: connected(sock), 40), daemon.log_text()[-3000:]
        yield sock, rec
    finally:
        daemon.stop()
        rec.close()


def connected(sock: Path) -> bool:
    reply = status(sock)
    return bool(reply and reply["link"]["connected"])


def sign(keys: Path, role: str = "command", device: str = "cam-001", seq: int = 0) -> str:
    root = load_root_file(keys / "root.json")
    return make_command(
        op="config",
        device=device,
        fleet="f1",
        sequence=seq or int(time.time() * 1000),
        expires_s=time.time() + 300,
        request=REQUEST,
        keys=signers_for(keys, root, role),
    )


def test_config_commands_need_the_command_role(
    device: tuple[Path, Recorder], mosquitto: MosquittoBroker, keys: Path, tmp_path: Path
) -> None:
    _sock, rec = device
    refusals = {
        "plain": (REQUEST, "unsigned"),
        "release": ({"signed": sign(keys, role="release")}, "unsigned"),
        "other": ({"signed": sign(keys, device="cam-002")}, "not_targeted"),
    }
    for cmd_id, (doc, _) in refusals.items():
        send_config(mosquitto, cmd_id, doc)
    for cmd_id, (_, reason) in refusals.items():
        answer = final(rec, cmd_id)
        assert (answer["status"], answer["reason"]) == ("failed", reason), answer
    assert not desired_path(tmp_path / "state").exists()  # nothing stored

    argv = ["cmd", "cam-001", "config", json.dumps(REQUEST), "--sign", str(keys)]
    argv += ["--fleet", "f1", "--broker", mosquitto.url, "--timeout", "20"]
    assert main(argv) == 0  # the device answered successful
    assert desired_path(tmp_path / "state").exists()

    replay = {"signed": sign(keys, seq=1)}  # below the sequence the tool just used
    send_config(mosquitto, "replay", replay)
    answer = final(rec, "replay")
    assert (answer["status"], answer["reason"]) == ("failed", "rollback"), answer
