"""Host checks: ``systemd`` unit state, ``accelerator`` presence, ``thermal`` and throttling.

Paths are read below ``root`` so tests can lay out a board's sysfs in a temp dir.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from agent.config import BoardConfig
from agent.diag.report import CheckResult, Status, fail, ok, warn, worst
from agent.diag.system import CommandRunner, run_command

UNIT = "edge-agent.service"
SHOW_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "WatchdogUSec",
    "NRestarts",
    "ActiveEnterTimestamp",
)
THERMAL_FAIL_MARGIN_C = 10.0
# Raspberry Pi firmware get_throttled bits: low half is "now", high half "since boot".
THROTTLE_BITS: dict[int, str] = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage since boot",
    17: "frequency capped since boot",
    18: "throttled since boot",
    19: "soft temperature limit since boot",
}
EDGETPU_USB_IDS = frozenset({("1a6e", "089a"), ("18d1", "9302")})  # before/after firmware load
_L4T_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def systemd_booted(root: Path = Path("/")) -> bool:
    """sd_booted(): systemd is PID 1 when this directory exists."""
    return under(root, "/run/systemd/system").is_dir()


def parse_show(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


def watchdog_set(value: str) -> bool:
    return value not in ("", "0", "infinity")


def judge_systemd(props: Mapping[str, str]) -> CheckResult:
    load = props.get("LoadState", "")
    active = props.get("ActiveState", "")
    sub = props.get("SubState", "")
    restarts = int(props.get("NRestarts") or 0)
    wd = props.get("WatchdogUSec", "0")
    data = dict(props)
    if load != "loaded":
        return warn(
            "systemd",
            f"{UNIT} is {load or 'unknown'}",
            "install it: sudo edge-agent setup-service --enable --now",
            **data,
        )
    state = f"{active} ({sub}), watchdog {wd if watchdog_set(wd) else 'off'}, {restarts} restart(s)"
    if active == "failed":
        return fail(
            "systemd",
            f"{state}, result {props.get('Result', '?')}",
            "journalctl -u edge-agent -n 100; fix the cause, then systemctl restart edge-agent",
            **data,
        )
    if active != "active":
        return warn(
            "systemd", state, "systemctl start edge-agent (enable it to start at boot)", **data
        )
    if not watchdog_set(wd):
        return warn("systemd", state, "set WatchdogSec= in the unit so a hang restarts it", **data)
    if restarts:
        return warn(
            "systemd",
            state,
            "it recovered, but find why: journalctl -u edge-agent -b | grep -i watchdog",
            **data,
        )
    return ok("systemd", state, **data)


def check_systemd(root: Path = Path("/"), runner: CommandRunner = run_command) -> CheckResult:
    if not systemd_booted(root):
        return warn(
            "systemd",
            "not under systemd (PID 1 is not systemd); nothing restarts the agent if it dies",
            "on a device install the unit (edge-agent setup-service); fine in a container",
        )
    argv = ["systemctl", "show", UNIT, "--no-pager", f"--property={','.join(SHOW_PROPERTIES)}"]
    try:
        code, out = runner(argv)
    except (OSError, subprocess.SubprocessError) as exc:
        return warn("systemd", f"systemctl failed: {exc}", "is systemctl installed?")
    if code != 0:
        return warn("systemd", f"systemctl show exited {code}", "run it by hand to see why")
    return judge_systemd(parse_show(out))


def l4t_release(text: str) -> str | None:
    match = _L4T_RE.search(text)
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def usb_ids(root: Path) -> set[tuple[str, str]]:
    found = set()
    base = under(root, "/sys/bus/usb/devices")
    if base.is_dir():
        for dev in base.iterdir():
            try:
                vendor = (dev / "idVendor").read_text().strip().lower()
                product = (dev / "idProduct").read_text().strip().lower()
            except OSError:
                continue
            found.add((vendor, product))
    return found


def gpu_node_problems(board: BoardConfig, root: Path) -> tuple[list[Path], list[str], list[str]]:
    """The profile's GPU device nodes, those missing, and those the agent cannot open."""
    nodes = [under(root, p) for p in board.gpu_device_paths]
    missing = [str(p) for p in nodes if not p.exists()]
    denied = [str(p) for p in nodes if p.exists() and not os.access(p, os.R_OK | os.W_OK)]
    return nodes, missing, denied


def check_jetson(board: BoardConfig, root: Path) -> CheckResult:
    release_file = under(root, "/etc/nv_tegra_release")
    try:
        release = l4t_release(release_file.read_text(errors="replace"))
    except OSError:
        release = None
    nodes, missing, denied = gpu_node_problems(board, root)
    data = {"l4t": release, "missing": missing, "denied": denied}
    if release is None:
        return fail(
            "accelerator",
            f"profile {board.name} expects a Jetson GPU but {release_file} has no L4T release",
            "wrong firmware profile (device.profile), or JetPack is not installed",
            **data,
        )
    if missing:
        return fail(
            "accelerator",
            f"L4T {release}; GPU device nodes missing: {', '.join(missing)}",
            "check the nvgpu driver (dmesg | grep nvgpu); reflash JetPack if it does not load",
            **data,
        )
    if denied:
        return fail(
            "accelerator",
            f"L4T {release}; no read/write access to {', '.join(denied)}",
            "add the user to the video and render groups (see systemd/jetson drop-in)",
            **data,
        )
    return ok("accelerator", f"Jetson GPU, L4T {release}, {len(nodes)} device node(s)", **data)


def check_edgetpu(board: BoardConfig, root: Path) -> CheckResult:
    try:
        ctypes.CDLL(board.edgetpu_library)
        lib_error = None
    except OSError as exc:
        lib_error = str(exc)
    pcie = sorted(str(p) for p in under(root, "/dev").glob("apex_*"))
    usb = sorted(f"{v}:{p}" for v, p in usb_ids(root) & EDGETPU_USB_IDS)
    data = {"library": board.edgetpu_library, "pcie": pcie, "usb": usb}
    if lib_error is not None:
        return fail(
            "accelerator",
            f"EdgeTPU library {board.edgetpu_library} cannot be loaded: {lib_error}",
            "install libedgetpu1-std from the Coral apt repository",
            **data,
        )
    if not pcie and not usb:
        return fail(
            "accelerator",
            "EdgeTPU library loads but no Coral device is present (USB or /dev/apex_*)",
            "replug the USB Coral (a USB 3 port); for M.2/PCIe install gasket-dkms",
            **data,
        )
    where = ", ".join([*(f"USB {u}" for u in usb), *pcie])
    return ok("accelerator", f"EdgeTPU present ({where}), {board.edgetpu_library} loads", **data)


def nvidia_driver_version(text: str) -> str | None:
    """``NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  ...`` → ``580.95.05``."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            for word in line.split():
                if word[:1].isdigit() and "." in word:
                    return word
    return None


def check_nvidia_gpu(board: BoardConfig, root: Path) -> CheckResult:
    try:
        driver = nvidia_driver_version(
            under(root, "/proc/driver/nvidia/version").read_text(errors="replace")
        )
    except OSError:
        driver = None
    nodes, missing, denied = gpu_node_problems(board, root)
    data = {"driver": driver, "missing": missing, "denied": denied}
    if driver is None:
        return fail(
            "accelerator",
            f"profile {board.name} expects an NVIDIA GPU but no driver is loaded",
            "install the NVIDIA driver (nvidia-smi must work), or pick a CPU profile",
            **data,
        )
    if missing or denied:
        problems = []
        if missing:
            problems.append(f"missing: {', '.join(missing)}")
        if denied:
            problems.append(f"no read/write access: {', '.join(denied)}")
        return fail(
            "accelerator",
            f"NVIDIA driver {driver}; " + "; ".join(problems),
            "load nvidia-uvm (nvidia-modprobe -u -c=0) and add the user to the video group",
            **data,
        )
    return ok("accelerator", f"NVIDIA GPU, driver {driver}, {len(nodes)} device node(s)", **data)


def check_accelerator(board: BoardConfig, root: Path = Path("/")) -> CheckResult:
    if board.accelerator == "jetson-gpu":
        return check_jetson(board, root)
    if board.accelerator == "nvidia-gpu":
        return check_nvidia_gpu(board, root)
    if board.accelerator == "edgetpu":
        return check_edgetpu(board, root)
    return ok("accelerator", f"CPU only (profile {board.name})")


def decode_throttle(value: int) -> list[tuple[int, str]]:
    return [(bit, text) for bit, text in THROTTLE_BITS.items() if value & (1 << bit)]


def parse_throttle(text: str) -> int:
    """``0x50005``, ``50005`` (sysfs, hex) or ``throttled=0x50005`` (vcgencmd)."""
    raw = text.strip().rpartition("=")[2].strip()
    return int(raw, 16)


def judge_throttle(value: int) -> tuple[Status, str]:
    bits = decode_throttle(value)
    if not bits:
        return Status.OK, "no throttling"
    text = f"throttle 0x{value:x}: " + ", ".join(t for _, t in bits)
    if any(bit == 0 for bit, _ in bits):
        return Status.FAIL, text
    return Status.WARN, text


def check_thermal(board: BoardConfig, root: Path = Path("/")) -> CheckResult:
    temps: dict[str, float] = {}
    for path in board.thermal_zone_paths:
        try:
            temps[path] = int(under(root, path).read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    verdicts: list[tuple[Status, str]] = []
    hints = []
    data: dict[str, object] = {"temps_c": temps, "warn_c": board.thermal_warn_c}
    if temps:
        hottest = max(temps.values())
        text = f"max {hottest:.1f} C of {len(temps)} sensor(s) (warn at {board.thermal_warn_c:g})"
        if hottest >= board.thermal_warn_c + THERMAL_FAIL_MARGIN_C:
            verdicts.append((Status.FAIL, text))
        elif hottest >= board.thermal_warn_c:
            verdicts.append((Status.WARN, text))
        else:
            verdicts.append((Status.OK, text))
        if hottest >= board.thermal_warn_c:
            hints.append("improve cooling: heatsink/fan, airflow, out of direct sun")
    else:
        verdicts.append((Status.WARN, "no temperature sensor readable"))
        hints.append(f"check board.thermal_zone_paths for profile {board.name}")
    if board.throttle_path:
        try:
            value = parse_throttle(under(root, board.throttle_path).read_text())
        except (OSError, ValueError) as exc:
            verdicts.append((Status.WARN, f"throttle flags unreadable: {exc}"))
            hints.append("check board.throttle_path")
        else:
            data["throttle"] = f"0x{value:x}"
            verdicts.append(judge_throttle(value))
            if value & 0x10001:
                hints.append("under-voltage: use the board's official power supply and cable")
            elif value:
                hints.append("the SoC slowed itself down; improve cooling")
    status = worst(s for s, _ in verdicts)
    detail = "; ".join(t for _, t in verdicts)
    hint = "; ".join(hints)
    if status is Status.OK:
        return ok("thermal", detail, **data)
    if status is Status.WARN:
        return warn("thermal", detail, hint, **data)
    return fail("thermal", detail, hint, **data)
