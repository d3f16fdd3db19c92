"""Checks of the device itself: config, clock and disk."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from agent.config import AgentConfig
from agent.diag.report import CheckResult, fail, ok, warn
from agent.errors import ConfigError
from agent.timeguard import BUILD_FLOOR_WALL_S, read_last_known_good

# Runs a command and returns (exit code, stdout); raises OSError when it cannot start.
CommandRunner = Callable[[list[str]], tuple[int, str]]
COMMAND_TIMEOUT_S = 5.0


def run_command(argv: list[str]) -> tuple[int, str]:
    done = subprocess.run(  # noqa: S603 - fixed argv lists built by the checks, no shell
        argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    return done.returncode, done.stdout


def iso(wall_s: float) -> str:
    return dt.datetime.fromtimestamp(wall_s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_config(config: AgentConfig | None, error: ConfigError | None, source: str) -> CheckResult:
    if config is None:
        issues = [i.render() for i in error.issues] if error else []
        detail = str(error) if error else "no configuration loaded"
        if issues:
            detail += ": " + "; ".join(issues[:5]) + (" ..." if len(issues) > 5 else "")
        return fail(
            "config",
            detail,
            "run `edge-agent validate-config` and fix each listed key",
            issues=issues,
        )
    return ok(
        "config",
        f"valid ({source}; {len(config.cameras)} camera(s), {len(config.models)} model(s))",
    )


def ntp_state(runner: CommandRunner) -> str | None:
    """``yes``/``no`` from timedatectl, or None when it cannot say (no systemd, no binary)."""
    try:
        code, out = runner(["timedatectl", "show", "--property=NTPSynchronized", "--value"])
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.strip().lower()
    return value if code == 0 and value in ("yes", "no") else None


def judge_clock(now_wall_s: float, last_good_s: float | None, ntp: str | None) -> CheckResult:
    """Pure decision: behind a known-good floor fails; unsynchronised or unknown NTP warns."""
    floor = max(BUILD_FLOOR_WALL_S, last_good_s or 0.0)
    floor_name = "last known good time" if (last_good_s or 0.0) > BUILD_FLOOR_WALL_S else "build"
    data = {"now": iso(now_wall_s), "floor": iso(floor), "ntp_synchronized": ntp}
    if now_wall_s < floor:
        return fail(
            "clock",
            f"clock reads {iso(now_wall_s)}, {floor - now_wall_s:.0f} s behind the "
            f"{floor_name} {iso(floor)}",
            "set the time (timedatectl set-time / NTP reachable?); check the RTC battery",
            **data,
        )
    if ntp == "yes":
        return ok("clock", f"{iso(now_wall_s)}, NTP synchronised", **data)
    if ntp == "no":
        return warn(
            "clock",
            f"{iso(now_wall_s)} is plausible but NTP is not synchronised",
            "check `timedatectl timesync-status` and that UDP 123 to the NTP server is open",
            **data,
        )
    return warn(
        "clock",
        f"{iso(now_wall_s)} is plausible; NTP state unknown (timedatectl unavailable)",
        "compare with a phone clock; on systemd hosts run `timedatectl status`",
        **data,
    )


def check_clock(
    state_dir: Path, now_wall_s: float, runner: CommandRunner = run_command
) -> CheckResult:
    return judge_clock(now_wall_s, read_last_known_good(state_dir), ntp_state(runner))


def probe_write(directory: Path) -> str | None:
    """Write, fsync and delete a real file; returns the error text, or None when it worked."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".diag-", suffix=".tmp")
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    try:
        os.write(fd, b"edge-agent diag write probe\n")
        os.fsync(fd)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    finally:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
    return None


def check_disk(state_dir: Path, min_free_mb: int) -> CheckResult:
    if not state_dir.is_dir():
        what = "is not a directory" if state_dir.exists() else "does not exist"
        return fail(
            "disk",
            f"state directory {state_dir} {what}",
            "create it owned by the edge-agent user (systemd StateDirectory= does this)",
            state_dir=str(state_dir),
        )
    usage = shutil.disk_usage(state_dir)
    free_mb = usage.free / 1e6
    used_pct = 100.0 * (usage.total - usage.free) / usage.total if usage.total else 100.0
    data = {"state_dir": str(state_dir), "free_mb": round(free_mb, 1), "min_free_mb": min_free_mb}
    write_error = probe_write(state_dir)
    space = f"{free_mb:.0f} MB free ({used_pct:.0f}% used) on {state_dir}"
    if write_error is not None:
        return fail(
            "disk",
            f"{space}; a test write failed: {write_error}",
            "check ownership (edge-agent user), read-only remount, or a full filesystem",
            **data,
        )
    if free_mb < min_free_mb:
        return fail(
            "disk",
            f"{space}, below storage.min_free_mb={min_free_mb}",
            "free space: old logs (journalctl --vacuum-size), bundles, outbox backlog",
            **data,
        )
    if free_mb < 2 * min_free_mb:
        return warn(
            "disk",
            f"{space}, less than twice storage.min_free_mb={min_free_mb}",
            "free space soon; updates need room for a staged model",
            **data,
        )
    return ok("disk", f"{space}; state directory writable", **data)
