"""Build hook: firmware_profiles/ and systemd/ stay top level in the repository (the
contract's layout) and are copied into the wheel as agent/_packaged/ at build time, so an
installed package finds its board profiles and service files (agent/assets.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("firmware_profiles", "systemd")


class BuildPyWithShipped(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "agent" / "_packaged"
        for name in SHIPPED:
            source = HERE / name
            if not source.is_dir():
                # Building from an sdist made without them would ship a wheel with no profiles.
                raise SystemExit(f"{source} is missing: cannot build a complete wheel")
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(source, target / name)


setup(cmdclass={"build_py": BuildPyWithShipped})
