"""Individual checks against real temp state dirs and laid-out board files."""

from __future__ import annotations

import ctypes.util
import time
from pathlib import Path

import numpy as np

from agent.config import BoardConfig
from agent.diag import camera, host, system, updates
from agent.diag.report import Status
from agent.errors import ConfigError, ConfigIssue
from agent.timeguard import BUILD_FLOOR_WALL_S, record_good_time


def no_timedatectl(argv: list[str]) -> tuple[int, str]:
    raise FileNotFoundError(argv[0])


# --- config, clock, disk -------------------------------------------------------------


def test_config_fail_lists_every_issue():
    error = ConfigError(
        "2 problem(s)",
        [
            ConfigIssue("a.toml", "cameras[0].fps", "-1", "must be > 0"),
            ConfigIssue("env:X", "mqtt.url", "'x'", "bad url"),
        ],
    )
    result = system.check_config(None, error, "a.toml")
    assert result.status is Status.FAIL
    assert "cameras[0].fps" in result.detail
    assert "mqtt.url" in result.detail
    assert len(result.data["issues"]) == 2


def test_clock_behind_last_known_good_fails(tmp_path: Path):
    now = time.time()
    record_good_time(tmp_path, now + 3600)
    result = system.check_clock(tmp_path, now, no_timedatectl)
    assert result.status is Status.FAIL
    assert "behind the last known good time" in result.detail


def test_clock_before_build_floor_fails(tmp_path: Path):
    result = system.check_clock(tmp_path, 86400.0, no_timedatectl)  # 1970-01-02
    assert result.status is Status.FAIL
    assert "build" in result.detail


def test_clock_plausible_ntp_states(tmp_path: Path):
    now = BUILD_FLOOR_WALL_S + 1000
    assert system.judge_clock(now, None, "yes").status is Status.OK
    assert system.judge_clock(now, None, "no").status is Status.WARN
    unknown = system.check_clock(tmp_path, now, no_timedatectl)
    assert unknown.status is Status.WARN
    assert unknown.hint


def test_ntp_state_reads_timedatectl_output():
    assert system.ntp_state(lambda argv: (0, "yes\n")) == "yes"
    assert system.ntp_state(lambda argv: (0, "no\n")) == "no"
    assert system.ntp_state(lambda argv: (1, "")) is None


def test_disk_ok_on_writable_state_dir(tmp_path: Path):
    result = system.check_disk(tmp_path, 1)
    assert result.status is Status.OK
    assert list(tmp_path.iterdir()) == []  # the write probe cleaned up


def test_disk_below_min_free_fails(tmp_path: Path):
    import shutil

    free_mb = shutil.disk_usage(tmp_path).free / 1e6
    result = system.check_disk(tmp_path, int(free_mb) + 1000)
    assert result.status is Status.FAIL
    assert "min_free_mb" in result.detail
    assert system.check_disk(tmp_path, int(free_mb * 0.7)).status is Status.WARN


def test_disk_state_dir_missing_or_a_file_fails(tmp_path: Path):
    assert system.check_disk(tmp_path / "absent", 1).status is Status.FAIL
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = system.check_disk(blocker, 1)
    assert result.status is Status.FAIL
    assert "not a directory" in result.detail


# --- camera picture judgement (pure) ---------------------------------------------------


def sample_of(frames: list[np.ndarray], fps: float = 15.0) -> camera.Sample:
    sample = camera.Sample()
    previous = None
    for index, frame in enumerate(frames):
        camera.add_frame(sample, frame, previous, index / fps)
        previous = frame
    return sample


def noisy(seed: int, level: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(level - 40, level + 40, size=(48, 64, 3), dtype=np.uint8)


def test_camera_judgement_healthy_frozen_black_overexposed():
    good = sample_of([noisy(i) for i in range(10)])
    assert camera.judge_sample("camera:a", 15, good, 1.0).status is Status.OK
    frozen = sample_of([noisy(1)] * 10)
    result = camera.judge_sample("camera:a", 15, frozen, 1.0)
    assert (result.status, result.detail.split(":")[0]) == (Status.FAIL, "frozen")
    black = sample_of([noisy(i, level=40) // 8 for i in range(10)])
    assert camera.judge_sample("camera:a", 15, black, 1.0).detail.startswith("black")
    white = sample_of([np.full((48, 64, 3), 255, np.uint8) - (noisy(i) % 3) for i in range(10)])
    assert camera.judge_sample("camera:a", 15, white, 1.0).detail.startswith("over-exposed")


def test_camera_judgement_rate():
    slow = sample_of([noisy(i) for i in range(10)], fps=10.0)
    assert camera.judge_sample("camera:a", 15, slow, 1.0).status is Status.WARN
    crawl = sample_of([noisy(i) for i in range(10)], fps=5.0)
    assert camera.judge_sample("camera:a", 15, crawl, 1.0).status is Status.FAIL
    assert camera.judge_sample("camera:a", 15, camera.Sample(), 1.0).status is Status.FAIL


# --- thermal and throttling --------------------------------------------------------------


def board_with(tmp_path: Path, temps_mc: list[int], throttle: str | None = None) -> BoardConfig:
    paths = []
    for index, value in enumerate(temps_mc):
        zone = tmp_path / f"sys/class/thermal/thermal_zone{index}/temp"
        zone.parent.mkdir(parents=True)
        zone.write_text(f"{value}\n")
        paths.append(f"/sys/class/thermal/thermal_zone{index}/temp")
    throttle_path = ""
    if throttle is not None:
        throttle_file = tmp_path / "sys/devices/platform/soc/soc:firmware/get_throttled"
        throttle_file.parent.mkdir(parents=True)
        throttle_file.write_text(throttle)
        throttle_path = "/sys/devices/platform/soc/soc:firmware/get_throttled"
    return BoardConfig(
        name="rpi5", thermal_zone_paths=paths, thermal_warn_c=80.0, throttle_path=throttle_path
    )


def test_thermal_ok_warn_fail(tmp_path: Path):
    assert host.check_thermal(board_with(tmp_path / "a", [45000]), tmp_path / "a").status is (
        Status.OK
    )
    hot = host.check_thermal(board_with(tmp_path / "b", [50000, 82500]), tmp_path / "b")
    assert hot.status is Status.WARN
    assert "82.5" in hot.detail
    assert host.check_thermal(board_with(tmp_path / "c", [93000]), tmp_path / "c").status is (
        Status.FAIL
    )


def test_throttle_bits_decoded(tmp_path: Path):
    assert host.parse_throttle("throttled=0x50005") == 0x50005
    assert host.parse_throttle("50000\n") == 0x50000
    past = host.check_thermal(board_with(tmp_path / "a", [45000], "50000\n"), tmp_path / "a")
    assert past.status is Status.WARN
    assert "under-voltage since boot" in past.detail
    assert "throttled since boot" in past.detail
    now = host.check_thermal(board_with(tmp_path / "b", [45000], "0x50005"), tmp_path / "b")
    assert now.status is Status.FAIL
    assert "under-voltage now" in now.detail
    assert "power supply" in now.hint
    calm = host.check_thermal(board_with(tmp_path / "c", [45000], "0x0"), tmp_path / "c")
    assert calm.status is Status.OK


def test_thermal_without_sensors_warns(tmp_path: Path):
    board = BoardConfig(thermal_zone_paths=["/sys/class/thermal/nothing/temp"])
    assert host.check_thermal(board, tmp_path).status is Status.WARN


# --- accelerator -------------------------------------------------------------------------


def jetson_root(tmp_path: Path, nodes: list[str]) -> Path:
    (tmp_path / "etc").mkdir(parents=True)
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n"
    )
    for node in nodes:
        path = tmp_path / node.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    return tmp_path


def test_accelerator_cpu_only():
    assert host.check_accelerator(BoardConfig(accelerator="none")).status is Status.OK


def test_accelerator_jetson(tmp_path: Path):
    nodes = ["/dev/nvmap", "/dev/nvhost-ctrl-gpu"]
    board = BoardConfig(name="jetson-orin-nano", accelerator="jetson-gpu", gpu_device_paths=nodes)
    good = host.check_accelerator(board, jetson_root(tmp_path / "a", nodes))
    assert good.status is Status.OK
    assert "L4T R36.4.0" in good.detail
    missing = host.check_accelerator(board, jetson_root(tmp_path / "b", nodes[:1]))
    assert missing.status is Status.FAIL
    assert "nvhost-ctrl-gpu" in missing.detail
    not_jetson = host.check_accelerator(board, tmp_path / "c")
    assert not_jetson.status is Status.FAIL
    assert "L4T" in not_jetson.detail


def test_accelerator_discrete_nvidia(tmp_path: Path):
    nodes = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    board = BoardConfig(name="x86-nvidia", accelerator="nvidia-gpu", gpu_device_paths=nodes)
    root = tmp_path / "good"
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 30 2025\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    (root / "dev").mkdir()
    for node in nodes[:2]:
        (root / node.lstrip("/")).write_text("")
    missing_uvm = host.check_accelerator(board, root)
    assert missing_uvm.status is Status.FAIL
    assert "580.95.05" in missing_uvm.detail
    assert "nvidia-uvm" in missing_uvm.detail
    (root / "dev/nvidia-uvm").write_text("")
    good = host.check_accelerator(board, root)
    assert good.status is Status.OK
    assert good.detail == "NVIDIA GPU, driver 580.95.05, 3 device node(s)"
    no_driver = host.check_accelerator(board, tmp_path / "bare")
    assert no_driver.status is Status.FAIL
    assert "no driver" in no_driver.detail


def test_accelerator_edgetpu(tmp_path: Path):
    libc = ctypes.util.find_library("c")
    assert libc is not None
    usb = tmp_path / "sys/bus/usb/devices/2-1"
    usb.mkdir(parents=True)
    (usb / "idVendor").write_text("18d1\n")
    (usb / "idProduct").write_text("9302\n")
    # A loadable library stands in for libedgetpu; the device comes from the laid-out sysfs.
    present = host.check_accelerator(
        BoardConfig(accelerator="edgetpu", edgetpu_library=libc), tmp_path
    )
    assert present.status is Status.OK
    assert "USB 18d1:9302" in present.detail
    no_lib = host.check_accelerator(
        BoardConfig(accelerator="edgetpu", edgetpu_library="libedgetpu-absent.so.1"), tmp_path
    )
    assert no_lib.status is Status.FAIL
    no_device = host.check_accelerator(
        BoardConfig(accelerator="edgetpu", edgetpu_library=libc), tmp_path / "empty"
    )
    assert no_device.status is Status.FAIL


# --- systemd -------------------------------------------------------------------------------

SHOW_RUNNING = """LoadState=loaded
ActiveState=active
SubState=running
Result=success
MainPID=812
WatchdogUSec=30s
NRestarts=0
"""


def test_systemd_judgement():
    assert host.judge_systemd(host.parse_show(SHOW_RUNNING)).status is Status.OK
    restarted = host.judge_systemd(
        host.parse_show(SHOW_RUNNING.replace("NRestarts=0", "NRestarts=3"))
    )
    assert restarted.status is Status.WARN
    assert "3 restart(s)" in restarted.detail
    no_wd = host.judge_systemd(host.parse_show(SHOW_RUNNING.replace("30s", "0")))
    assert no_wd.status is Status.WARN
    failed = SHOW_RUNNING.replace("ActiveState=active", "ActiveState=failed").replace(
        "Result=success", "Result=watchdog"
    )
    result = host.judge_systemd(host.parse_show(failed))
    assert result.status is Status.FAIL
    assert "watchdog" in result.detail
    missing = host.judge_systemd({"LoadState": "not-found"})
    assert missing.status is Status.WARN


def test_systemd_check_runs_systemctl_when_booted(tmp_path: Path):
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    seen: list[list[str]] = []

    def runner(argv: list[str]) -> tuple[int, str]:
        seen.append(argv)
        return 0, SHOW_RUNNING

    assert host.check_systemd(tmp_path, runner).status is Status.OK
    assert seen[0][:3] == ["systemctl", "show", "edge-agent.service"]
    assert host.check_systemd(tmp_path / "nope", runner).status is Status.WARN


# --- trust and update journal ------------------------------------------------------------------


def test_trust_missing_and_invalid(tmp_path: Path):
    now = time.time()
    missing = updates.check_trust(tmp_path / "root.json", now)
    assert missing.status is Status.FAIL
    assert "missing" in missing.detail
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"payload": "nope"}')
    invalid = updates.check_trust(garbage, now)
    assert invalid.status is Status.FAIL
    assert "invalid" in invalid.detail


def test_update_journal_states():
    trial = {"slots": {"detector": {"active": {"release": 7}, "phase": "trial", "last_result": {}}}}
    result = updates.judge_update(trial)
    assert result.status is Status.WARN
    assert "detector in trial" in result.detail
    idle = {"slots": {"detector": {"active": {"release": 7}, "phase": "committed"}}}
    assert updates.judge_update(idle).status is Status.OK
    broken = {"slots": {"detector": {"phase": "inconsistent", "detail": "pointer dangles"}}}
    assert updates.judge_update(broken).status is Status.FAIL
    assert updates.judge_update({"slots": {}}).status is Status.OK


def test_update_check_on_empty_state_dir(tmp_path: Path):
    result = updates.check_update(tmp_path, tmp_path / "root.json")
    assert result.status is Status.OK
    assert "no model update installed" in result.detail


def test_disk_write_probe_reports_errors(tmp_path: Path):
    assert system.probe_write(tmp_path) is None
    assert system.probe_write(tmp_path / "absent") is not None


def test_trust_valid_and_near_expiry_roots(tmp_path: Path):
    from agent.fleet.keys import init_keys

    init_keys(tmp_path / "long", expires_in_days=365)
    good = updates.check_trust(tmp_path / "long/root.json", time.time())
    assert good.status is Status.OK
    assert good.data["root_version"] == 1
    init_keys(tmp_path / "short", expires_in_days=10)
    soon = updates.check_trust(tmp_path / "short/root.json", time.time())
    assert soon.status is Status.WARN
    assert "expires in" in soon.detail
    late = updates.check_trust(tmp_path / "short/root.json", time.time() + 20 * 86400)
    assert late.status is Status.WARN
    assert "expired" in late.detail


def test_update_row_labels_release_and_manifest_version():
    both = {"slots": {"detector": {"active": {"release": 3, "manifest_version": 7}}}}
    assert updates.judge_update(both).detail == "detector: release 3, manifest v7 (idle)"
    none = {"slots": {"detector": {"active": None, "phase": "idle"}}}
    assert updates.judge_update(none).detail == "detector: config model (idle)"


def test_update_status_line_has_no_none():
    committed = {
        "phase": "committed",
        "active": {"release": 4, "manifest_version": 4},
        "last_result": {"outcome": "committed", "reason": None},
    }
    line = updates.slot_status_line("detector", committed)
    assert line == "detector: phase committed, active release 4, manifest v4, last committed"
    fresh = {"phase": "idle", "active": None, "last_result": {}}
    assert (
        updates.slot_status_line("detector", fresh) == "detector: phase idle, active config model"
    )
    failed = {**committed, "last_result": {"outcome": "rejected", "reason": "rollback"}}
    assert updates.slot_status_line("detector", failed).endswith("last rejected (rollback)")
