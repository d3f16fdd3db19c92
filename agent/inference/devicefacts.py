"""Facts about this device's inference stack, for update compatibility checks and stats.

Every probe is lazy and safe: on a Raspberry Pi with no GPU, no TensorRT and no
pycuda, ``collect()`` simply leaves those keys out. Nothing here raises; a probe
that fails logs at debug level and contributes nothing.

Keys (all strings): ``arch``, ``accelerator``, ``tensorrt``, ``compute_capability``,
``gpu``, ``l4t``, ``jetpack``, ``onnxruntime``, ``onnxruntime_providers``, ``litert``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from agent.log import get_logger

log = get_logger(__name__)

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
# Global Unichip / Google vendor ids of the Coral USB accelerator (before and after firmware load).
CORAL_USB_IDS = ("1a6e:089a", "18d1:9302")
# A child interpreter that imports onnxruntime; generous for a slow board's first import.
PROBE_TIMEOUT_S = 30.0

# "# R36 (release), REVISION: 3.0, GCID: ..." -> release 36.3.0
_L4T_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")
# L4T major.minor -> JetPack release, for the releases the agent supports.
_JETPACK_BY_L4T = {
    "32.7": "4.6",
    "35.1": "5.0.2",
    "35.2": "5.1",
    "35.3": "5.1.1",
    "35.4": "5.1.2",
    "35.5": "5.1.3",
    "35.6": "5.1.4",
    "36.2": "6.0 DP",
    "36.3": "6.0",
    "36.4": "6.1",
}


def parse_l4t_release(text: str) -> str | None:
    """``/etc/nv_tegra_release`` content → ``"36.3.0"``; None when it is not a release line."""
    match = _L4T_RE.search(text)
    if match is None:
        return None
    major, revision = match.group(1), match.group(2)
    parts = [major, *revision.split(".")]
    while len(parts) < 3:
        parts.append("0")
    return ".".join(parts[:3])


def jetpack_for_l4t(l4t: str) -> str | None:
    major_minor = ".".join(l4t.split(".")[:2])
    return _JETPACK_BY_L4T.get(major_minor)


def normalise_arch(machine: str) -> str:
    """``platform.machine()`` spellings → the board profile's ``arch`` values."""
    lowered = machine.lower()
    if lowered in {"amd64", "x86_64", "x64"}:
        return "x86_64"
    if lowered in {"arm64", "aarch64"}:
        return "aarch64"
    if lowered.startswith("armv7"):
        return "armv7l"
    return lowered


def _distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def probe_l4t(path: Path = NV_TEGRA_RELEASE) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    release = parse_l4t_release(text)
    if release is None:
        return {}
    facts = {"l4t": release}
    if (jetpack := jetpack_for_l4t(release)) is not None:
        facts["jetpack"] = jetpack
    return facts


def probe_tensorrt() -> dict[str, str]:
    # Version from package metadata first: importing tensorrt loads libnvinfer (slow, large).
    version = _distribution_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-lean")
    if version is None:
        try:
            trt = importlib.import_module("tensorrt")
        except ImportError:
            return {}
        version = str(getattr(trt, "__version__", ""))
    return {"tensorrt": version} if version else {}


def probe_cuda_device(index: int = 0) -> dict[str, str]:
    """GPU name and compute capability through pycuda, when pycuda and a driver are present."""
    try:
        cuda = importlib.import_module("pycuda.driver")
        cuda.init()
        device = cuda.Device(index)
        major, minor = device.compute_capability()
        name = str(device.name())
    except Exception as exc:  # ImportError, or pycuda's LogicError/RuntimeError without a driver
        log.debug("devicefacts_cuda_unavailable", error=str(exc))
        return {}
    return {"gpu": name, "compute_capability": f"{major}.{minor}"}


def probe_onnxruntime() -> dict[str, str]:
    version = _distribution_version("onnxruntime", "onnxruntime-gpu")
    if version is None:
        return {}
    facts = {"onnxruntime": version}
    if (providers := onnxruntime_providers()) is not None:
        facts["onnxruntime_providers"] = providers
    return facts


def onnxruntime_providers() -> str | None:
    """The providers list; asked of a child interpreter unless ONNX Runtime is loaded here.

    Importing onnxruntime maps ~12 MB that stay resident for the daemon's lifetime
    (tools/bench_memory.py), so a daemon that runs no ONNX model must not import it
    just to learn a compatibility fact.
    """
    if (ort := sys.modules.get("onnxruntime")) is not None:
        try:
            return ",".join(ort.get_available_providers())
        except Exception as exc:  # a broken install must not break diag
            log.debug("devicefacts_onnxruntime_import_failed", error=str(exc))
            return None
    code = "import onnxruntime as o; print(','.join(o.get_available_providers()))"
    try:
        proc = subprocess.run(  # noqa: S603 - this interpreter and a constant script
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("devicefacts_onnxruntime_import_failed", error=str(exc))
        return None
    return proc.stdout.strip() or None


def probe_litert() -> dict[str, str]:
    version = _distribution_version("ai-edge-litert", "tflite-runtime")
    return {"litert": version} if version else {}


def probe_edgetpu(
    dev_dir: Path = Path("/dev"), usb_dir: Path = Path("/sys/bus/usb/devices")
) -> bool:
    if any(dev_dir.glob("apex_*")):
        return True
    try:
        for device in usb_dir.iterdir():
            vendor = (device / "idVendor").read_text(encoding="ascii").strip()
            product = (device / "idProduct").read_text(encoding="ascii").strip()
            if f"{vendor}:{product}" in CORAL_USB_IDS:
                return True
    except OSError:
        return False
    return False


def accelerator_from(facts: dict[str, str], *, edgetpu_present: bool) -> str:
    """The board profile's ``accelerator`` vocabulary: jetson-gpu, nvidia-gpu, edgetpu or none."""
    if "l4t" in facts:
        return "jetson-gpu"
    if "compute_capability" in facts:
        return "nvidia-gpu"
    if edgetpu_present:
        return "edgetpu"
    return "none"


def collect(
    probes: tuple[Callable[[], dict[str, str]], ...] | None = None,
    edgetpu_probe: Callable[[], bool] = probe_edgetpu,
) -> dict[str, str]:
    """Every fact that can be found, as strings; keys absent when unknown."""
    facts: dict[str, str] = {"arch": normalise_arch(platform.machine())}
    for probe in probes or (
        probe_l4t,
        probe_tensorrt,
        probe_cuda_device,
        probe_onnxruntime,
        probe_litert,
    ):
        try:
            facts.update(probe())
        except Exception as exc:  # one broken probe must not hide the other facts
            log.warning(
                "devicefacts_probe_failed", probe=getattr(probe, "__name__", "?"), error=str(exc)
            )
    try:
        edgetpu = edgetpu_probe()
    except Exception:
        edgetpu = False
    facts["accelerator"] = accelerator_from(facts, edgetpu_present=edgetpu)
    return facts
