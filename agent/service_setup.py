"""Put the systemd service in place from the installed package (``edge-agent setup-service``).

The files come from the package (systemd/ copied in at build time, or the checkout's):
the unit with ExecStart pointing at this install's ``edge-agent``, the board's drop-ins,
tmpfiles.d and sysusers.d entries, and ``/etc/edge-agent/agent.toml`` from a commented
template when there is none. Every step is idempotent: a file with the right content is
left alone, a device's own config is never touched. ``root`` other than ``/`` installs
into an image (systemctl only with ``--root=``, nothing started).
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.assets import SAMPLE_MODEL, SAMPLES_DIR, shipped_dir
from agent.errors import AgentError
from agent.tomlcompat import TOMLDecodeError, load_toml

UNIT = "edge-agent.service"
DEFAULT_EXEC = "/opt/edge-agent/bin/edge-agent"
# --board → drop-ins from systemd/dropins/.
BOARD_DROPINS: dict[str, tuple[str, ...]] = {
    "jetson": ("jetson-gpu",),
    "rpi": ("rpi-libcamera",),
    "coral": ("coral-edgetpu",),
    "none": (),
}
STATE_DIRS = ("/var/lib/edge-agent", "/var/cache/edge-agent", "/run/edge-agent")
# ProtectHome= and PrivateTmp= hide these from the service: an ExecStart there cannot start.
HIDDEN_FROM_SERVICE = ("/home/", "/root/", "/tmp/", "/var/tmp/", "/run/user/")  # noqa: S108

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


class ServiceSetupError(AgentError):
    """setup-service cannot do what was asked; ``reason`` is a snake_case code."""

    def __init__(self, reason: str, message: str, **data: object) -> None:
        super().__init__(message, reason=reason, **data)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def run_tool(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv lists of systemd tools, no shell
        list(argv), capture_output=True, text=True, check=False, timeout=120
    )


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, what: str, path: str) -> None:
        self.lines.append(f"{what:<10} {path}")


@dataclass(frozen=True)
class Target:
    root: Path

    @property
    def live(self) -> bool:
        return self.root.resolve() == Path("/")

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


def files_dir() -> Path:
    found = shipped_dir("systemd")
    if found is None or not (found / UNIT).is_file():
        raise ServiceSetupError(
            "files_missing", "the package has no systemd files (a broken install?)"
        )
    return found


def known_dropins() -> list[str]:
    return sorted(p.stem for p in (files_dir() / "dropins").glob("*.conf"))


def exec_path(target: Target, prefix: Path | None) -> str:
    """ExecStart's program as the target system sees it: this install's console script."""
    if prefix is not None:
        program = prefix / "bin" / "edge-agent"
    else:
        # sys.executable's venv; not resolved, the venv's bin/ is the install.
        program = Path(sysconfig.get_path("scripts")) / "edge-agent"
        if not program.exists():
            program = Path(sys.executable).parent / "edge-agent"
    if not target.live:
        # Installing into an image from a venv inside that image: strip the image's root.
        root = str(target.root.resolve())
        text = str(program)
        if text.startswith(root + "/"):
            program = Path(text[len(root) :])
    text = str(program)
    if not program.is_absolute() or any(ch.isspace() for ch in text) or "%" in text:
        raise ServiceSetupError(
            "bad_prefix", f"ExecStart program {text!r} must be an absolute path without spaces or %"
        )
    return text


def render_unit(template: str, program: str) -> str:
    lines = [
        f"ExecStart={program} run" if line.startswith("ExecStart=") else line
        for line in template.splitlines()
    ]
    return "\n".join(lines) + "\n"


def profile_of_config(target: Target) -> str | None:
    path = target.path("/etc/edge-agent/agent.toml")
    try:
        profile = load_toml(path).get("device", {}).get("profile")
    except (OSError, TOMLDecodeError):
        return None
    return profile if isinstance(profile, str) else None


def boards_for_profile(name: str) -> list[str]:
    """The drop-in boards a profile needs, from its accelerator and camera stack."""
    from agent.config.profiles import load_profile  # noqa: PLC0415 - pulls in the loader

    board = load_profile(name).get("board", {})
    boards = []
    if board.get("accelerator") == "jetson-gpu":
        boards.append("jetson")
    if "libcamerasrc" in str(board.get("csi_pipeline", "")):
        boards.append("rpi")
    if board.get("accelerator") == "edgetpu":
        boards.append("coral")
    return boards


def write_file(path: Path, text: str, mode: int, report: Report) -> bool:
    """Write through a temp name when the content differs; True when it was written."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        if path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
        report.add("unchanged", str(path))
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    tmp.replace(path)
    report.add("written", str(path))
    return True


def check_tool(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ServiceSetupError(
            "tool_failed", f"{what} exited {done.returncode}: {' | '.join(detail)}"
        )


@dataclass(frozen=True)
class InstallPlan:
    target: Target
    boards: tuple[str, ...]
    profile: str
    program: str
    enable: bool = False
    now: bool = False


def install(plan: InstallPlan, runner: Runner = run_tool) -> Report:
    report = Report()
    target = plan.target
    source = files_dir()
    unit_dir = target.path("/etc/systemd/system")
    unit_text = render_unit((source / UNIT).read_text(encoding="utf-8"), plan.program)
    write_file(unit_dir / UNIT, unit_text, 0o644, report)
    if plan.program.startswith(HIDDEN_FROM_SERVICE):
        report.warnings.append(
            f"{plan.program} is hidden from the service (ProtectHome=/PrivateTmp=): it will "
            "not start; install into /opt/edge-agent (python3 -m venv /opt/edge-agent)"
        )
    elif not target.path(plan.program).exists():
        report.warnings.append(f"{plan.program} does not exist under {target.root}")

    wanted = {name for board in plan.boards for name in BOARD_DROPINS[board]}
    dropin_dir = unit_dir / f"{UNIT}.d"
    for name in known_dropins():
        path = dropin_dir / f"{name}.conf"
        if name in wanted:
            text = (source / "dropins" / f"{name}.conf").read_text(encoding="utf-8")
            write_file(path, text, 0o644, report)
        elif path.is_file():  # another board's, from an earlier run; an operator's stay
            path.unlink()
            report.add("removed", str(path))

    tmpfiles = target.path("/etc/tmpfiles.d/edge-agent.conf")
    sysusers = target.path("/etc/sysusers.d/edge-agent.conf")
    write_file(tmpfiles, (source / "edge-agent.tmpfiles.conf").read_text("utf-8"), 0o644, report)
    write_file(sysusers, (source / "edge-agent.sysusers.conf").read_text("utf-8"), 0o644, report)
    root_flag = [] if target.live else [f"--root={target.root}"]

    # The user first: tmpfiles and the config's group ownership need it.
    if shutil.which("systemd-sysusers"):
        check_tool(runner(["systemd-sysusers", *root_flag, str(sysusers)]), "systemd-sysusers")
        report.add("ran", "systemd-sysusers")
    elif target.live:
        if runner(["getent", "passwd", "edge-agent"]).returncode != 0:
            check_tool(
                runner(
                    ["useradd", "--system", "--home-dir", "/var/lib/edge-agent", "--shell",
                     "/usr/sbin/nologin", "--user-group", "edge-agent"]
                ),
                "useradd",
            )  # fmt: skip
            report.add("ran", "useradd edge-agent")
    else:
        report.warnings.append("systemd-sysusers is missing: the image creates the user at boot")

    config_dir = target.path("/etc/edge-agent")
    for directory in (config_dir, config_dir / "trust"):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o750)
    config = config_dir / "agent.toml"
    if config.exists():
        report.add("kept", str(config))
    else:
        template = string.Template((source / "agent.toml.template").read_text("utf-8"))
        text = template.substitute(profile=plan.profile, sample_model=SAMPLES_DIR / SAMPLE_MODEL)
        write_file(config, text, 0o640, report)

    if shutil.which("systemd-tmpfiles"):
        done = runner(["systemd-tmpfiles", *root_flag, "--create", str(tmpfiles)])
        check_tool(done, "systemd-tmpfiles --create")
        report.add("ran", "systemd-tmpfiles --create")

    _systemctl_install(plan, runner, report)
    return report


def systemd_running(target: Target) -> bool:
    return target.live and Path("/run/systemd/system").is_dir()


def _systemctl_install(plan: InstallPlan, runner: Runner, report: Report) -> None:
    target = plan.target
    if systemd_running(target):
        check_tool(runner(["systemctl", "daemon-reload"]), "systemctl daemon-reload")
        report.add("ran", "systemctl daemon-reload")
        if plan.enable:
            argv = ["systemctl", "enable", *(["--now"] if plan.now else []), UNIT]
            check_tool(runner(argv), " ".join(argv))
            report.add("ran", " ".join(argv))
        elif plan.now:
            check_tool(runner(["systemctl", "restart", UNIT]), "systemctl restart")
            report.add("ran", f"systemctl restart {UNIT}")
    elif plan.enable and shutil.which("systemctl"):
        # An image (or a container): enabling only makes the wants/ link, offline.
        argv = ["systemctl", f"--root={target.root}", "enable", UNIT]
        check_tool(runner(argv), " ".join(argv))
        report.add("ran", " ".join(argv))
    elif target.live:
        report.warnings.append("systemd is not running here: no daemon-reload, nothing started")


def uninstall(target: Target, *, purge: bool, runner: Runner = run_tool) -> Report:
    """Remove the unit and our entries; state and config stay unless ``purge``."""
    report = Report()
    unit_dir = target.path("/etc/systemd/system")
    if systemd_running(target):
        runner(["systemctl", "disable", "--now", UNIT])  # fails harmlessly when not loaded
        report.add("ran", f"systemctl disable --now {UNIT}")
    elif shutil.which("systemctl") and (unit_dir / UNIT).is_file():
        runner(["systemctl", f"--root={target.root}", "disable", UNIT])
        report.add("ran", f"systemctl --root={target.root} disable {UNIT}")
    dropin_dir = unit_dir / f"{UNIT}.d"
    ours = [dropin_dir / f"{name}.conf" for name in known_dropins()]
    for path in [
        unit_dir / UNIT,
        *ours,
        target.path("/etc/tmpfiles.d/edge-agent.conf"),
        target.path("/etc/sysusers.d/edge-agent.conf"),
    ]:
        if path.is_file():
            path.unlink()
            report.add("removed", str(path))
    if dropin_dir.is_dir() and not any(dropin_dir.iterdir()):
        dropin_dir.rmdir()
    kept = [target.path("/etc/edge-agent"), *(target.path(d) for d in STATE_DIRS)]
    for directory in kept:
        if not directory.exists():
            continue
        if purge:
            shutil.rmtree(directory)
            report.add("removed", str(directory))
        else:
            report.add("kept", str(directory))
    if systemd_running(target):
        check_tool(runner(["systemctl", "daemon-reload"]), "systemctl daemon-reload")
        report.add("ran", "systemctl daemon-reload")
    # The system user stays: files elsewhere may still belong to it (Debian policy too).
    return report


def require_root(target: Target) -> None:
    if target.live and os.geteuid() != 0:
        raise ServiceSetupError(
            "not_root", "setup-service changes /etc and systemd: run it as root (sudo)"
        )
