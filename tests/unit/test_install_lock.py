"""The one install lock (issue 18.6) and the CLI's refusal to go around a running daemon."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.cli.main import main as agent_main
from agent.daemon import instance
from agent.errors import InstallBusyError, Reason, UpdateError
from agent.update.store.bundle import read_manifest
from agent.update.store.journal import read_status
from agent.update.store.lock import InstallLock
from tests.support.update_fleet import Fleet, install_bundle, make_installer

HOLD = """
import sys, time
from pathlib import Path
from agent.update.store.lock import InstallLock
with InstallLock(Path(sys.argv[1]), owner="other process").held():
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_second_holder_waits_then_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    first, second = InstallLock(tmp_path, owner="mqtt install"), InstallLock(tmp_path)
    with first.held():
        with first.held():  # re-entrant: install() calls recover()
            pass
        got: list[BaseException] = []

        def contend() -> None:
            try:
                with second.held(wait_s=0.2):
                    pass
            except InstallBusyError as exc:
                got.append(exc)

        worker = threading.Thread(target=contend)
        worker.start()
        worker.join(5)
        assert len(got) == 1
        assert "install_busy" in str(got[0])
        assert "mqtt install" in str(got[0])
    with second.held(wait_s=0.2):  # free again
        pass
    assert list(tmp_path.iterdir()) == []  # no lock file left in the state dir


def test_another_process_holding_it_blocks_until_it_lets_go(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), "1.0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(InstallBusyError), InstallLock(tmp_path).held(wait_s=0.1):
            pass
        begun = time.monotonic()
        with InstallLock(tmp_path).held(wait_s=10):
            assert time.monotonic() - begun < 5
    finally:
        proc.wait(10)


def test_cli_leaves_the_disk_alone_when_a_daemon_holds_the_state_dir(
    tmp_path: Path, write_config, clean_env, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    cfg = write_config(
        f"""
        [storage]
        state_dir = "{state}"
        [control]
        socket_path = "{tmp_path / "run" / "nobody.sock"}"
        [[models]]
        slot = "detector"
        path = "/nonexistent.tflite"
        """
    )
    held = instance.acquire(state)  # a daemon whose socket does not answer
    try:
        assert agent_main(["update", "rollback", "--config", str(cfg)]) == 1
    finally:
        held.release()
    err = capsys.readouterr().err
    assert "already_running" in err
    assert "left alone" in err


def test_a_manifest_overtaken_while_it_was_fetched_is_not_installed(
    tmp_path: Path, short_range_model: Path
) -> None:
    """Verify happens before the download, install after: a newer install may land between.

    Two installers (the daemon's MQTT path and a local command) on one device: v2 verified
    first and fetched slowly, v3 verified and committed meanwhile. Installing v2 then
    would serve v2 under v3's floor; it is refused as ``rollback`` with v3 left active.
    """
    fleet = Fleet(tmp_path / "fleet", short_range_model)
    state = tmp_path / "state"
    mqtt, local = make_installer(state, fleet), make_installer(state, fleet)
    assert install_bundle(mqtt, fleet.bundle()).outcome == "committed"
    slow = fleet.bundle(manifest_version=2, release=2)
    verified_slow = mqtt.verify(read_manifest(slow))
    assert install_bundle(local, fleet.bundle(manifest_version=3, release=3)).outcome == "committed"
    active = local.store.current_sha("detector")
    with pytest.raises(UpdateError) as info:
        mqtt.install(verified_slow, slow)
    assert info.value.reason is Reason.ROLLBACK
    assert mqtt.store.current_sha("detector") == active
    status = read_status(state, fleet.root_path)["slots"]["detector"]
    assert status["active"]["manifest_version"] == 3
