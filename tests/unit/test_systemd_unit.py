"""The systemd unit, tmpfiles and sysusers entries, installed by `edge-agent setup-service` into a
temp root and checked with the real systemd tools (systemd-analyze, -sysusers, -tmpfiles)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "tools/install_service.sh"
UNIT = REPO / "systemd/edge-agent.service"
# Worst exposure score we accept from `systemd-analyze security` (0 best, 10 worst).
MAX_EXPOSURE = 2.0


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: apt-get install systemd (CI installs it)")
    return found


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every key of the unit with all its values (systemd keys repeat; configparser cannot)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def setup_service(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "setup-service", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Into a temp root, ExecStart at the unit's default (/opt/edge-agent)."""
    return setup_service("--root", str(root), "--prefix", "/opt/edge-agent", *args)


def prepare_verify_root(root: Path) -> None:
    """What verify needs besides our files: the stock units and an executable ExecStart."""
    stock = Path("/usr/lib/systemd/system")
    if not stock.is_dir():
        stock = Path("/lib/systemd/system")
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/edge-agent/bin/edge-agent"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={root}", "edge-agent.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_unit_has_the_contract_settings():
    settings = unit_settings(UNIT)
    single = {k: v[-1] for k, v in settings.items()}
    assert single["Type"] == "notify"
    assert single["NotifyAccess"] == "main"
    assert single["WatchdogSec"] == "30"
    assert single["Restart"] == "on-failure"
    assert int(single["StartLimitBurst"]) >= 1
    assert int(single["StartLimitIntervalSec"]) > 0
    assert single["User"] == "edge-agent"
    assert "video" in single["SupplementaryGroups"].split()
    assert single["StateDirectory"] == "edge-agent"
    assert single["ConfigurationDirectory"] == "edge-agent"
    assert single["RuntimeDirectory"] == "edge-agent"
    assert single["ExecStart"] == "/opt/edge-agent/bin/edge-agent run"
    assert single["ProtectSystem"] == "strict"
    assert single["DevicePolicy"] == "closed"
    assert "char-video4linux rw" in settings["DeviceAllow"]
    assert single["CapabilityBoundingSet"] == ""
    assert single["NoNewPrivileges"] == "yes"
    # The control socket the unit's RuntimeDirectory holds is the config default.
    from agent.config import ControlConfig

    assert ControlConfig().socket_path.startswith("/run/edge-agent/")
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read_string(UNIT.read_text())
    assert parsed.sections() == ["Unit", "Service", "Install"]


def test_install_into_a_temp_root(tmp_path: Path):
    tool("systemd-sysusers")
    tool("systemd-tmpfiles")
    root = tmp_path / "root"
    done = install(root, "--board", "jetson")
    assert done.returncode == 0, done.stderr
    assert (root / "etc/systemd/system/edge-agent.service").read_text() == UNIT.read_text()
    assert (root / "etc/systemd/system/edge-agent.service.d/jetson-gpu.conf").is_file()
    assert (root / "etc/tmpfiles.d/edge-agent.conf").is_file()
    assert (root / "etc/sysusers.d/edge-agent.conf").is_file()
    passwd = (root / "etc/passwd").read_text()
    line = next(x for x in passwd.splitlines() if x.startswith("edge-agent:"))
    uid = int(line.split(":")[2])
    assert line.endswith(":/var/lib/edge-agent:/usr/sbin/nologin")
    state = root / "var/lib/edge-agent"
    assert state.is_dir()
    assert state.stat().st_uid == uid
    assert state.stat().st_mode & 0o777 == 0o750
    config = root / "etc/edge-agent/agent.toml"
    assert config.stat().st_mode & 0o777 == 0o640
    assert (root / "etc/edge-agent/trust").is_dir()
    # The starting config is a valid one.
    from agent.config import load_config

    assert load_config(config).config.mqtt.url.startswith("mqtt://")
    # A second run keeps the device's own config.
    config.write_text(config.read_text() + "\n# edited on the device\n")
    again = install(root, "--board", "jetson")
    assert again.returncode == 0, again.stderr
    assert config.read_text().endswith("# edited on the device\n")
    # The second run changed nothing: every file unchanged, the config kept.
    actions = [line.split()[0] for line in again.stdout.splitlines()[:-1]]
    assert "written" not in actions
    assert "removed" not in actions
    assert actions.count("unchanged") == 4
    assert "kept" in actions


def test_bad_flags_are_clear_errors(tmp_path: Path):
    unknown = install(tmp_path / "r", "--board", "no-such-board")
    assert unknown.returncode == 2
    assert "invalid choice" in unknown.stderr
    now = install(tmp_path / "r", "--now")
    assert now.returncode == 1
    assert "bad_flags" in now.stderr
    purge = install(tmp_path / "r", "--purge")
    assert purge.returncode == 1
    assert "bad_flags" in purge.stderr
    profile = install(tmp_path / "r", "--profile", "no-such-profile")
    assert profile.returncode == 1
    assert "unknown_profile" in profile.stderr
    assert "Traceback" not in unknown.stderr + now.stderr + purge.stderr + profile.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("board", ["", "jetson", "rpi", "coral"])
def test_systemd_analyze_verify_is_clean(tmp_path: Path, board: str):
    root = tmp_path / "root"
    done = install(root, *(["--board", board] if board else ["--board", "none"]))
    assert done.returncode == 0, done.stderr
    prepare_verify_root(root)
    result = verify(root)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys and bad values: any message about our unit is a failure.
    assert "edge-agent" not in result.stderr, result.stderr
    assert "edge-agent" not in result.stdout, result.stdout


def test_verify_would_catch_a_broken_unit(tmp_path: Path):
    root = tmp_path / "root"
    assert install(root).returncode == 0
    prepare_verify_root(root)
    unit = root / "etc/systemd/system/edge-agent.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    assert "edge-agent" in verify(root).stderr


def test_security_exposure_stays_low(tmp_path: Path):
    root = tmp_path / "root"
    assert install(root).returncode == 0
    prepare_verify_root(root)
    argv = [tool("systemd-analyze"), "security", "--offline=yes", f"--root={root}", "--no-pager"]
    result = subprocess.run(
        [*argv, "edge-agent.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for edge-agent\.service: ([\d.]+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")  # recorded in docs/systemd.md
    assert exposure <= MAX_EXPOSURE


def test_exec_start_is_this_install_and_verifies(tmp_path: Path):
    """Without --prefix the unit runs the edge-agent of the venv that ran setup-service."""
    root = tmp_path / "root"
    done = setup_service("--root", str(root), "--board", "rpi")
    assert done.returncode == 0, done.stderr
    program = Path(sysconfig.get_path("scripts")) / "edge-agent"
    settings = unit_settings(root / "etc/systemd/system/edge-agent.service")
    assert settings["ExecStart"] == [f"{program} run"]
    prepare_verify_root(root)
    stub = root / str(program).lstrip("/")
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    result = verify(root)
    assert result.returncode == 0, result.stderr
    assert "edge-agent" not in result.stderr + result.stdout


def test_venv_inside_the_image_is_seen_from_the_image(tmp_path: Path):
    """An image builder's venv at ROOT/opt/ea: ExecStart names /opt/ea, not the build path."""
    from agent.service_setup import Target, exec_path

    root = tmp_path / "image"
    assert exec_path(Target(root), root / "opt/ea") == "/opt/ea/bin/edge-agent"
    assert exec_path(Target(root), Path("/srv/agent")) == "/srv/agent/bin/edge-agent"


def test_drop_ins_follow_the_profile_and_switch_cleanly(tmp_path: Path):
    root = tmp_path / "root"
    dropins = root / "etc/systemd/system/edge-agent.service.d"
    assert install(root, "--profile", "rpi4-coral").returncode == 0
    assert sorted(p.name for p in dropins.iterdir()) == ["coral-edgetpu.conf", "rpi-libcamera.conf"]
    assert 'profile = "rpi4-coral"' in (root / "etc/edge-agent/agent.toml").read_text()
    # An operator's own drop-in survives a board change; the other board's go.
    (dropins / "site.conf").write_text("[Service]\nIPAddressDeny=any\n")
    assert install(root, "--board", "jetson").returncode == 0
    assert sorted(p.name for p in dropins.iterdir()) == ["jetson-gpu.conf", "site.conf"]
    # Without --board or --profile the existing config's profile decides.
    assert install(root).returncode == 0
    assert sorted(p.name for p in dropins.iterdir()) == [
        "coral-edgetpu.conf",
        "rpi-libcamera.conf",
        "site.conf",
    ]


def test_enable_in_an_image_and_uninstall_keeps_config_unless_purged(tmp_path: Path):
    tool("systemctl")
    root = tmp_path / "root"
    assert install(root, "--enable", "--board", "rpi").returncode == 0
    wants = root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    assert wants.is_symlink()
    (root / "var/lib/edge-agent/outbox.db").write_text("queued")
    removed = install(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not wants.exists()
    assert not (root / "etc/systemd/system/edge-agent.service").exists()
    assert not (root / "etc/systemd/system/edge-agent.service.d").exists()
    assert not (root / "etc/tmpfiles.d/edge-agent.conf").exists()
    assert (root / "etc/edge-agent/agent.toml").is_file()
    assert (root / "var/lib/edge-agent/outbox.db").is_file()
    assert "--purge removes them" in removed.stdout
    purged = install(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/edge-agent").exists()
    assert not (root / "var/lib/edge-agent").exists()


def test_a_venv_the_service_cannot_see_is_warned_about(tmp_path: Path):
    done = setup_service("--root", str(tmp_path / "r"), "--prefix", "/home/pi/venv")
    assert done.returncode == 0, done.stderr
    assert "hidden from the service" in done.stderr


def test_the_checkout_wrapper_runs_setup_service(tmp_path: Path):
    root = tmp_path / "root"
    done = subprocess.run(
        ["bash", str(WRAPPER), "--root", str(root), "--prefix", "/opt/edge-agent"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (root / "etc/systemd/system/edge-agent.service").read_text() == UNIT.read_text()


def test_the_live_system_needs_root(monkeypatch, capsys):
    import os

    from agent.cli.main import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["setup-service"]) == 1
    err = capsys.readouterr().err
    assert "not_root: setup-service changes /etc and systemd" in err
    assert "Traceback" not in err
