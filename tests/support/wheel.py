"""Build the project's wheel the way a release would, and make fresh venvs to install it into.

The wheel is built from a copy of the sources, so concurrent builds never share a build/
folder in the checkout and nothing the checkout has by accident (assets/, .venv) leaks in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
TREES = ("agent", "firmware_profiles", "systemd")


def build_wheel(work: Path) -> Path:
    src = work / "src"
    src.mkdir(parents=True)
    for name in SOURCES:
        shutil.copy2(REPO / name, src / name)
    for name in TREES:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("edge_agent-*.whl")
    return wheel


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment less anything that points back at the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EDGE_AGENT", "PYTHON", "VIRTUAL_ENV", "XDG_CACHE"))
    }
    env |= {"HOME": str(home), **extra}
    return env


def make_venv(path: Path, python: str = sys.executable, *, system_site: bool = False) -> Path:
    argv = [python, "-m", "venv", *(["--system-site-packages"] if system_site else []), str(path)]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return path / "bin" / "python"


def pip_install(python: Path, *requirements: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *requirements],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install {requirements} failed:\n{done.stderr[-3000:]}")
