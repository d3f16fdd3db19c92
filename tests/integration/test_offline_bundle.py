"""tools/build_offline_bundle.py: a tarball that installs with no index, then sets up the unit."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support.wheel import REPO, clean_env

TOOL = REPO / "tools/build_offline_bundle.py"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def bundle(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if PYTHON not in ("3.10", "3.11") or platform.machine() != "x86_64":
        # The x86_64 bundle is built and installed here: it needs this very platform.
        pytest.skip(
            reason="needs an x86_64 machine with Python 3.10 or 3.11 (the bundle is installed "
            f"here), not Python {PYTHON} on {platform.machine()}"
        )
    out = tmp_path_factory.mktemp("bundle")
    argv = [sys.executable, str(TOOL), "--arch", "x86_64", "--python", PYTHON, "--extras", ""]
    done = run([*argv, "--wheel", str(built_wheel), "--out", str(out)])
    assert done.returncode == 0, done.stderr[-2000:]
    (tarball,) = out.glob("edge-agent-*-x86_64-py*.tar.gz")
    with tarfile.open(tarball) as archive:
        archive.extractall(out, filter="data")
    (folder,) = (p for p in out.iterdir() if p.is_dir())
    return folder


def test_bundle_holds_binary_wheels_for_every_dependency(bundle: Path):
    manifest = json.loads((bundle / "BUNDLE.json").read_text())
    assert manifest["arch"] == "x86_64"
    assert manifest["python"] == PYTHON
    names = {name.split("-")[0].lower() for name in manifest["wheels"]}
    assert {"edge_agent", "numpy", "pydantic_core", "cryptography", "paho_mqtt"} <= names
    assert all(name.endswith(".whl") for name in manifest["wheels"])  # nothing to compile
    assert (bundle / "install.sh").stat().st_mode & 0o111


def test_install_sh_installs_with_no_index_and_sets_up_the_service(bundle: Path, tmp_path: Path):
    prefix = tmp_path / "opt/edge-agent"
    image = tmp_path / "image"
    env = clean_env(tmp_path, PYTHON=sys.executable, PIP_NO_INDEX="1")
    argv = ["sh", str(bundle / "install.sh"), "--prefix", str(prefix)]
    done = run([*argv, "--root", str(image), "--board", "rpi"], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "installed edge-agent" in done.stdout
    unit = (image / "etc/systemd/system/edge-agent.service").read_text()
    assert f"ExecStart={prefix}/bin/edge-agent run" in unit
    config = tmp_path / "rpi5.toml"
    config.write_text('[device]\nprofile = "rpi5"\n')
    check = run([str(prefix / "bin/edge-agent"), "validate-config", str(config)], env=env)
    assert check.returncode == 0, check.stderr
    assert "valid (profile rpi5" in check.stdout


def test_install_sh_refuses_another_python(bundle: Path, tmp_path: Path):
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\necho "3.9"\n')
    fake.chmod(0o755)
    env = clean_env(tmp_path, PYTHON=str(fake))
    done = run(["sh", str(bundle / "install.sh"), "--prefix", str(tmp_path / "v")], env=env)
    assert done.returncode == 2
    assert f"this bundle is for Python {PYTHON}, {fake} is 3.9" in done.stderr
    assert not (tmp_path / "v").exists()


def test_bad_arch_is_a_usage_error():
    done = run([sys.executable, str(TOOL), "--arch", "armv7l", "--python", "3.11"])
    assert done.returncode == 2
    assert "invalid choice: 'armv7l'" in done.stderr
