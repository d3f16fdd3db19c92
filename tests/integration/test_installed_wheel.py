"""The user's path: the built wheel in a fresh venv, run from a folder that is not the checkout.

`pip install 'edge-agent[tflite]'` must bring everything `validate-config` with a board
profile and `demo` need: profiles, the sample model and photos are package data.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.wheel import REPO, clean_env, make_venv, pip_install


@dataclass(frozen=True)
class Installed:
    bin: Path
    home: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "edge-agent"), *args],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def installed(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("user")
    home = base / "home"
    home.mkdir()
    env = clean_env(home)
    python = make_venv(base / "venv")
    pip_install(python, f"{built_wheel}[tflite]", env=env)
    return Installed(python.parent, home, env)


def test_the_package_is_imported_from_the_venv(installed: Installed):
    done = subprocess.run(
        [str(installed.bin / "python"), "-c", "import agent; print(agent.__file__)"],
        cwd=installed.home,
        env=installed.env,
        capture_output=True,
        text=True,
        check=True,
    )
    where = Path(done.stdout.strip())
    assert installed.bin.parent in where.parents
    assert REPO not in where.parents


def test_validate_config_finds_every_board_profile(installed: Installed):
    names = sorted(p.stem for p in (REPO / "firmware_profiles").glob("*.toml"))
    assert "rpi5" in names
    for name in names:
        config = installed.home / f"{name}.toml"
        config.write_text(f'[device]\nid = "cam-1"\nprofile = "{name}"\n')
        done = installed.run("validate-config", str(config))
        assert done.returncode == 0, done.stderr
        assert f"valid (profile {name}," in done.stdout
    bad = installed.home / "bad.toml"
    bad.write_text('[device]\nprofile = "no-such-board"\n')
    done = installed.run("validate-config", str(bad))
    assert done.returncode == 1
    assert "known profiles: jetson-nano, jetson-orin-nano, rpi4" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_runs_on_the_packaged_samples(installed: Installed):
    done = installed.run("demo", "--seconds", "4")
    assert done.returncode == 0, done.stderr
    faces = [ln for ln in done.stdout.splitlines() if ln.startswith("seq ") and " face " in ln]
    assert len(faces) >= 10, done.stdout  # the packaged clip opens on the astronaut for 3 s
    assert "summary after" in done.stdout
    # Rendered once into the user's cache, from the photos in the package.
    (clip,) = (installed.home / ".cache/edge-agent").glob("sample-*.avi")
    assert clip.stat().st_size > 0
    missing = installed.run("demo", "--clip", str(installed.home / "nope.mp4"))
    assert missing.returncode == 1
    assert "sample_missing" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_setup_service_points_at_this_venv(installed: Installed, tmp_path: Path):
    done = installed.run("setup-service", "--root", str(tmp_path), "--board", "rpi")
    assert done.returncode == 0, done.stderr
    unit = (tmp_path / "etc/systemd/system/edge-agent.service").read_text()
    assert f"ExecStart={installed.bin / 'edge-agent'} run\n" in unit
    assert (tmp_path / "etc/systemd/system/edge-agent.service.d/rpi-libcamera.conf").is_file()
