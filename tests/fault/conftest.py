"""Shared pieces of the fault suite: process gauges, a least-squares slope, a tiny filesystem."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def rss_mb() -> float:
    """Resident set size of this process (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def figure(name: str, **values: object) -> None:
    """One greppable line per measured figure (pytest -s shows it; docs/reliability.md cites it)."""
    shown = " ".join(f"{k}={v}" for k, v in values.items())
    print(f"\nFIGURE {name}: {shown}")


@dataclass
class SmallFs:
    """A directory whose filesystem can really fill up (tmpfs) — or, when mounting is not
    possible (not root, no CAP_SYS_ADMIN), a plain directory plus a free-space seam."""

    path: Path
    real: bool
    size_bytes: int

    def fill(self) -> Path:
        """Write a ballast file until the filesystem is full (real) or report it full (seam)."""
        ballast = self.path / "ballast.bin"
        if not self.real:
            ballast.write_bytes(b"")
            return ballast
        block = b"\0" * 65536
        # Unbuffered: a buffered writer would raise ENOSPC again on close for its leftovers.
        with ballast.open("wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(block)
            except OSError:
                pass
            for size in (4096, 512, 1):  # the last partial blocks too
                with contextlib.suppress(OSError):
                    while handle.write(b"\0" * size):
                        pass
        # Leave no partial block behind: the filesystem is at 0 bytes free now.
        return ballast

    def free_bytes(self) -> int:
        if self.real:
            return shutil.disk_usage(self.path).free
        ballast = self.path / "ballast.bin"
        return 0 if ballast.exists() else self.size_bytes

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / "ballast.bin").unlink()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFs]:
    """A 16 MB tmpfs when this process may mount one; otherwise the seam (never a skip)."""
    mount_point = tmp_path / "smallfs"
    mount_point.mkdir()
    size = 16 * 1024 * 1024
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
            capture_output=True,
            check=False,
        )
        mounted = done.returncode == 0
    try:
        yield SmallFs(mount_point, mounted, size)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
