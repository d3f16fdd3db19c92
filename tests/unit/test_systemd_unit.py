"""The systemd unit, tmpfiles and sysusers entries, installed by tools/install_service.sh into a
temp root and checked with the real systemd tools (systemd-analyze, -sysusers, -tmpfiles)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "tools/install_service.sh"
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


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


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
    done = install(root, "--dropin", "jetson-gpu")
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
    assert install(root).returncode == 0
    assert config.read_text().endswith("# edited on the device\n")


def test_install_rejects_unknown_dropin_and_enable_with_root(tmp_path: Path):
    assert install(tmp_path / "r", "--dropin", "no-such-board").returncode == 2
    assert install(tmp_path / "r", "--enable").returncode == 2


@pytest.mark.parametrize("dropin", ["", "jetson-gpu", "rpi-libcamera", "coral-edgetpu"])
def test_systemd_analyze_verify_is_clean(tmp_path: Path, dropin: str):
    root = tmp_path / "root"
    done = install(root, *(["--dropin", dropin] if dropin else []))
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
