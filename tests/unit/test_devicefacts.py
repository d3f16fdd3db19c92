"""Device facts: parsers are pure; collect() is safe on a machine without any accelerator."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from agent.inference import devicefacts


@pytest.mark.parametrize(
    ("text", "release"),
    [
        (
            "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64\n",
            "36.3.0",
        ),
        (
            "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n",
            "35.4.1",
        ),
        (
            "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64\n",
            "32.7.1",
        ),
        ("not a tegra release file", None),
    ],
)
def test_parse_l4t_release(text: str, release: str | None) -> None:
    assert devicefacts.parse_l4t_release(text) == release


def test_probe_l4t_reads_the_file_and_maps_jetpack(tmp_path: Path) -> None:
    path = tmp_path / "nv_tegra_release"
    path.write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic\n")
    assert devicefacts.probe_l4t(path) == {"l4t": "36.4.0", "jetpack": "6.1"}
    assert devicefacts.probe_l4t(tmp_path / "absent") == {}


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "x86_64"),
        ("AMD64", "x86_64"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
        ("armv7l", "armv7l"),
    ],
)
def test_normalise_arch(machine: str, arch: str) -> None:
    assert devicefacts.normalise_arch(machine) == arch


def test_accelerator_vocabulary() -> None:
    assert (
        devicefacts.accelerator_from(
            {"l4t": "36.3.0", "compute_capability": "8.7"}, edgetpu_present=False
        )
        == "jetson-gpu"
    )
    assert (
        devicefacts.accelerator_from({"compute_capability": "9.0"}, edgetpu_present=False)
        == "nvidia-gpu"
    )
    assert devicefacts.accelerator_from({}, edgetpu_present=True) == "edgetpu"
    assert devicefacts.accelerator_from({}, edgetpu_present=False) == "none"


def test_edgetpu_probe_finds_a_coral_on_usb(tmp_path: Path) -> None:
    dev, usb = tmp_path / "dev", tmp_path / "usb"
    dev.mkdir()
    (usb / "1-1").mkdir(parents=True)
    (usb / "1-1" / "idVendor").write_text("18d1\n")
    (usb / "1-1" / "idProduct").write_text("9302\n")
    assert devicefacts.probe_edgetpu(dev, usb) is True
    (usb / "1-1" / "idProduct").write_text("0001\n")
    assert devicefacts.probe_edgetpu(dev, usb) is False
    (dev / "apex_0").touch()
    assert devicefacts.probe_edgetpu(dev, usb) is True


def test_collect_on_this_machine_is_safe_and_string_valued() -> None:
    facts = devicefacts.collect()
    assert facts["arch"] == devicefacts.normalise_arch(platform.machine())
    assert facts["accelerator"] in {"none", "nvidia-gpu", "jetson-gpu", "edgetpu"}
    assert "onnxruntime" in facts  # installed in the dev environment
    assert "CPUExecutionProvider" in facts["onnxruntime_providers"]
    assert "litert" in facts
    assert all(isinstance(v, str) for v in facts.values())


def test_a_failing_probe_does_not_hide_the_others(log_events) -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("driver exploded")

    facts = devicefacts.collect(
        probes=(broken, lambda: {"tensorrt": "10.3.0"}), edgetpu_probe=lambda: False
    )
    assert facts["tensorrt"] == "10.3.0"
    assert facts["accelerator"] == "none"
    assert any(e["event"] == "devicefacts_probe_failed" for e in log_events)


def test_onnxruntime_providers_are_learnt_without_loading_it_here() -> None:
    # A fresh interpreter: this test process may already hold onnxruntime from other tests.
    script = (
        "import sys\n"
        "from agent.inference import devicefacts\n"
        "facts = devicefacts.collect()\n"
        "print(facts['onnxruntime_providers'], 'onnxruntime' in sys.modules)\n"
    )
    out = (
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        .stdout.splitlines()[-1]
        .split()
    )  # the agent may log to stdout before it
    assert "CPUExecutionProvider" in out[0]
    assert out[1] == "False"  # ~12 MB resident saved in a daemon that runs no ONNX model
