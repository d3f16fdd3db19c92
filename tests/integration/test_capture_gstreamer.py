"""gst: and csi: capture on real GStreamer, in the Jetson shape.

JetPack's OpenCV (like Debian's python3-opencv) is built with GStreamer for the system
Python, and the agent runs from a venv made with --system-site-packages. This test builds
that venv from /usr/bin/python3, installs the built wheel without the opencv extras, and
runs tests/support/gst_capture_check.py in it: videotestsrc pipelines through the agent's
appsink settings, a csi: template, a stalled pipeline detected and reopened, and the cv2
imported being the system's, not a pip wheel. Skipped, saying why, where the system
OpenCV with GStreamer is absent (.ci/run installs it: python3-opencv,
gstreamer1.0-plugins-base, gstreamer1.0-plugins-good, python3-venv).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.wheel import REPO, clean_env, make_venv, pip_install

SYSTEM_PYTHON = Path("/usr/bin/python3")
CHECK = REPO / "tests/support/gst_capture_check.py"
PROBE = (
    "import cv2, ensurepip;"
    "print(next(l for l in cv2.getBuildInformation().splitlines() if 'GStreamer' in l))"
)


def why_not_here() -> str | None:
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is missing"
    done = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", PROBE], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        return (
            "the system Python has no cv2 or venv: apt-get install python3-opencv python3-venv "
            f"gstreamer1.0-plugins-base gstreamer1.0-plugins-good ({done.stderr.strip()[-200:]})"
        )
    if "YES" not in done.stdout:
        return f"the system OpenCV is built without GStreamer: {done.stdout.strip()}"
    return None


@pytest.fixture(scope="module")
def report(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    reason = why_not_here()
    if reason is not None:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("jetson-shape")
    env = clean_env(base)
    python = make_venv(base / "venv", str(SYSTEM_PYTHON), system_site=True)
    # No extras: the extras pull opencv-python-headless, which would shadow the system cv2.
    pip_install(python, str(built_wheel), env=env)
    done = subprocess.run(
        [str(python), str(CHECK)],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    result["venv"] = str(base / "venv")
    print(json.dumps(result, indent=1))
    return result


def test_the_venv_uses_the_system_opencv_not_a_wheel(report):
    assert str(report["cv2_file"]).startswith("/usr/lib/python3/dist-packages/")
    assert report["opencv_dists"] == []  # no opencv-python(-headless) installed by pip
    # The system NumPy satisfies the agent's pin, so pip keeps it: a NumPy 2 from pip would
    # break a system cv2 built against NumPy 1.x.
    assert str(report["numpy_file"]).startswith("/usr/lib/python3/dist-packages/")
    assert "YES" in str(report["gstreamer"])
    assert str(report["agent_file"]).startswith(str(report["venv"]))


def test_gst_pipeline_frames_flow_through_the_agents_appsink(report):
    gst = report["gst"]
    assert gst["flowing"], gst
    assert gst["shape"] == [120, 160, 3]
    assert gst["published"] >= 20  # 30 fps live source for over a second
    assert gst["health"] == "ok"


def test_csi_template_opens_and_delivers_its_size(report):
    csi = report["csi"]
    assert csi["flowing"], csi
    assert csi["shape"] == [240, 320, 3]  # the profile's csi_width x csi_height


def test_stalled_pipeline_is_detected_and_reopened(report):
    stall = report["stall"]
    assert stall["flowing"], stall
    assert stall["detected"], stall
    assert stall["stalls"] == 1
    assert stall["reflowing"], stall
    assert stall["opens"] >= 2
    assert stall["reconnects"] >= 1


def test_ended_pipeline_is_reopened(report):
    eos = report["eos"]
    assert eos["reopened"], eos
    assert eos["stalls"] >= 1
