"""Local update commands with a running daemon (issues 17.4 and 18.6), real broker and process.

Before: ``edge-agent update rollback`` with the daemon up changed only the on-disk pointers
(``update status`` said one version, the daemon served another), and a CLI install racing
an MQTT install mixed the journal, ``current`` and the served model. Now the CLI goes
through the daemon's control socket and one install lock serialises every installer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main as agent_main
from agent.fleet.bundle import BundleSpec, create_bundle
from agent.fleet.cli import main as fleet_main
from agent.fleet.keys import init_keys
from agent.fleet.served import load_bundle
from agent.update.store.journal import read_status
from agent.update.store.lock import InstallLock
from tests.integration.mqtt_helpers import Recorder
from tests.support.daemon_proc import minimal_config, spawn, status, stop, wait_running
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker
TRIAL_S = 2


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def device(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    keys: Path,
    sample_clip: Path,
    short_range_model: Path,
) -> Iterator[tuple[Path, Path]]:
    """A running daemon (real process, real pipeline); yields (config, socket)."""
    sock = tmp_path / "run" / "control.sock"
    cfg = minimal_config(
        tmp_path / "agent.toml",
        broker_url=mosquitto.url,
        state_dir=tmp_path / "state",
        socket_path=sock,
        trust_root=keys / "root.json",
        extra=f"""
        [[cameras]]
        name = "door"
        source = "file:{sample_clip}"
        fps = 10
        loop = true
        [[models]]
        slot = "detector"
        path = "{short_range_model}"
        cameras = ["door"]
        threshold = 0.5
        """,
    )
    proc = spawn(cfg, tmp_path / "daemon.log")
    try:
        wait_running(sock, proc)
        assert wait_for(lambda: "runtime" in serving(sock), 30), status(sock)
        yield cfg, sock
    finally:
        assert stop(proc) == 0, (tmp_path / "daemon.log").read_text()[-3000:]


def make_bundle(keys: Path, out: Path, model: Path, version: int) -> Path:
    spec = BundleSpec(
        model=model,
        slot="detector",
        fleet="f1",
        manifest_version=version,
        release=version,
        devices=["cam-001"],
        health={"trial_s": TRIAL_S},
        chunk_size=16384,
    )
    create_bundle(spec, keys, out)
    return out


def serving(sock: Path) -> dict[str, Any]:
    reply = status(sock)
    return dict(reply["models"].get("detector", {})) if reply else {}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = agent_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def update_status(cfg: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, _ = cli(capsys, "update", "status", "--json", "--config", str(cfg))
    assert code == 0
    doc: dict[str, Any] = json.loads(out)
    return doc["slots"]["detector"]


def active_dir(cfg: Path, capsys: pytest.CaptureFixture[str]) -> str:
    return str(update_status(cfg, capsys)["active"]["sha256"])


def test_rollback_with_a_running_daemon_changes_what_it_serves(
    *,
    device: tuple[Path, Path],
    keys: Path,
    tmp_path: Path,
    short_range_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, sock = device
    for version in (2, 3):
        bundle = make_bundle(keys, tmp_path / f"b{version}", short_range_model, version)
        code, out, err = cli(capsys, "update", "install", str(bundle), "--config", str(cfg))
        assert code == 0, out + err
        assert "committed" in out
        # Installed by the daemon itself: it serves the new version at once.
        assert active_dir(cfg, capsys) in serving(sock)["path"]
    assert update_status(cfg, capsys)["active"]["manifest_version"] == 3

    code, out, err = cli(capsys, "update", "rollback", "detector", "--config", str(cfg))
    assert code == 0, out + err
    slot = update_status(cfg, capsys)
    assert slot["active"]["manifest_version"] == 2
    assert slot["active"]["sha256"] in serving(sock)["path"]  # the daemon serves v2 too

    # The daemon's refusals come back with their reason; recover has nothing to finish.
    missing = tmp_path / "no-such-bundle"
    code, out, err = cli(capsys, "update", "install", str(missing), "--config", str(cfg))
    assert code == 1
    assert "malformed: bundle directory" in err
    assert "does not exist" in err
    assert str(missing) in err
    code, out, err = cli(capsys, "update", "recover", "--config", str(cfg))
    assert code == 0, out + err
    assert update_status(cfg, capsys)["active"]["manifest_version"] == 2


def test_cli_install_racing_an_mqtt_install_never_mixes(
    *,
    device: tuple[Path, Path],
    mosquitto: MosquittoBroker,
    keys: Path,
    tmp_path: Path,
    short_range_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, sock = device
    over_mqtt = make_bundle(keys, tmp_path / "b2", short_range_model, 2)
    local = make_bundle(keys, tmp_path / "b3", short_range_model, 3)
    dep = load_bundle(over_mqtt).deployment_id
    rec = Recorder(mosquitto.url, f"ea/v1/d/cam-001/op/model_update/{dep}")
    published: list[int] = []
    publisher = threading.Thread(
        target=lambda: published.append(
            fleet_main(["publish", str(over_mqtt), "--broker", mosquitto.url, "--timeout", "60"])
        ),
        name="fleet-publish",
    )
    publisher.start()
    try:
        # The MQTT install holds the install lock through its trial; the CLI comes in then.
        assert wait_for(lambda: mid_install(tmp_path / "state", keys), 30), rec.on(rec_topic(dep))
        code, out, err = cli(capsys, "update", "install", str(local), "--config", str(cfg))
    finally:
        publisher.join(90)
        rec.close()
    assert published, "publish did not end"
    # Either the CLI waited for the MQTT install and then installed v3, or it was refused
    # with a reason that says why; never a third, mixed state.
    assert code == 0 or "install_busy" in err, out + err
    slot = update_status(cfg, capsys)
    assert slot["phase"] in ("committed", "idle")
    active = slot["active"]
    assert active["manifest_version"] == (3 if code == 0 else 2)
    assert active["sha256"] in serving(sock)["path"]
    assert not InstallLock(tmp_path / "state").holder()  # nobody left holding it


def mid_install(state: Path, keys: Path) -> bool:
    """The daemon's journal says an install is between verification and commit."""
    slot = read_status(state, keys / "root.json")["slots"].get("detector") or {}
    return slot.get("phase") in ("verified", "staged", "activating", "trial")


def rec_topic(dep: str) -> str:
    return f"ea/v1/d/cam-001/op/model_update/{dep}"
