#!/usr/bin/env python3
"""Build an offline installer: one tarball with a wheelhouse for one platform and install.sh.

    tools/build_offline_bundle.py --arch aarch64 --python 3.11            # Raspberry Pi OS
    tools/build_offline_bundle.py --arch aarch64 --python 3.10 --extras "" # JetPack 6

The wheelhouse holds the agent's wheel and every dependency for that platform, binary
wheels only (``pip download --only-binary=:all: --platform ...``), so the site needs no
index and no compiler. On the device: ``tar xzf BUNDLE && sudo ./BUNDLE_DIR/install.sh``
makes the venv at /opt/edge-agent, installs with ``--no-index`` and runs setup-service.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHES = ("aarch64", "x86_64")
PYTHONS = ("3.10", "3.11")
# manylinux tags up to glibc 2.35 (Ubuntu 22.04 / JetPack 6); bookworm has 2.36.
GLIBC_MINORS = range(17, 36)
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
TREES = ("agent", "firmware_profiles", "systemd")

INSTALL_SH = r"""#!/bin/sh
# Offline install of edge-agent @VERSION@ for @ARCH@, Python @PYTHON@ (no index needed).
#
#   sudo ./install.sh [--prefix DIR] [--system-site-packages] [--no-service] [SETUP-SERVICE ARGS]
#
# --prefix DIR              the venv (default /opt/edge-agent); an existing one is upgraded
# --system-site-packages    see the system OpenCV/TensorRT (Jetson: JetPack's)
# --no-service              only install the package, no systemd set-up
# Other arguments go to `edge-agent setup-service` (--board rpi, --profile rpi5, --enable ...).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/edge-agent
venv_flags=""
service=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --system-site-packages) venv_flags="--system-site-packages"; shift ;;
        --no-service) service=0; shift ;;
        *) break ;;
    esac
done
python="${PYTHON:-python3}"
have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$have" != "@PYTHON@" ]; then
    echo "install.sh: this bundle is for Python @PYTHON@, $python is $have" >&2
    exit 2
fi
if [ "$(uname -m)" != "@ARCH@" ]; then
    echo "install.sh: this bundle is for @ARCH@, this machine is $(uname -m)" >&2
    exit 2
fi
"$python" -m venv $venv_flags "$prefix"
"$prefix/bin/python" -m pip install --quiet --no-index --find-links "$here/wheelhouse" \
    --upgrade "edge-agent@EXTRAS@==@VERSION@"
echo "installed edge-agent @VERSION@ into $prefix"
if [ "$service" = 1 ]; then
    "$prefix/bin/edge-agent" setup-service --prefix "$prefix" "$@"
fi
"""


def platform_tags(arch: str) -> list[str]:
    return [f"manylinux2014_{arch}"] + [f"manylinux_2_{m}_{arch}" for m in GLIBC_MINORS]


def build_wheel(work: Path) -> Path:
    """From a copy of the sources: an in-tree build would leave build/ in the checkout."""
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        shutil.copy2(REPO / name, src / name)
    for name in TREES:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work)]
    subprocess.run([*pip, str(src)], check=True)
    (wheel,) = work.glob("edge_agent-*.whl")
    return wheel


def download(
    wheel: Path, extras: str, arch: str, python: str, dest: Path, *, find_links: list[Path]
) -> None:
    requirement = f"{wheel}[{extras}]" if extras else str(wheel)
    # Wheels built elsewhere (pycuda on a Jetson: PyPI has only its sdist) are found here.
    links = [arg for folder in find_links for arg in ("--find-links", str(folder))]
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        *(arg for tag in platform_tags(arch) for arg in ("--platform", tag)),
        *links,
        "-d",
        str(dest),
        requirement,
    ]
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")]
        raise SystemExit(
            f"build_offline_bundle: no binary wheels for every dependency on {arch} / Python "
            f"{python}: {' '.join(errors) or done.stderr[-500:]}"
        )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", required=True, choices=ARCHES)
    parser.add_argument("--python", required=True, choices=PYTHONS)
    parser.add_argument(
        "--extras", default="tflite", help='extras to install (default tflite; "" for none)'
    )
    parser.add_argument(
        "--wheel", type=Path, default=None, help="the agent's wheel (default: build)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where the tarball goes")
    parser.add_argument(
        "--find-links",
        type=Path,
        action="append",
        default=[],
        help="a folder of extra wheels, e.g. pycuda built on a Jetson (repeatable)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-agent-bundle-") as tmp:
        work = Path(tmp)
        wheel = args.wheel.resolve() if args.wheel else build_wheel(work)
        version = wheel.name.split("-")[1]
        name = f"edge-agent-{version}-{args.arch}-py{args.python}"
        root = work / name
        wheelhouse = root / "wheelhouse"
        wheelhouse.mkdir(parents=True)
        download(wheel, args.extras, args.arch, args.python, wheelhouse, find_links=args.find_links)
        if not (wheelhouse / wheel.name).exists():
            shutil.copy2(wheel, wheelhouse)
        script = INSTALL_SH
        for key, value in {
            "@VERSION@": version,
            "@ARCH@": args.arch,
            "@PYTHON@": args.python,
            "@EXTRAS@": f"[{args.extras}]" if args.extras else "",
        }.items():
            script = script.replace(key, value)
        (root / "install.sh").write_text(script, encoding="utf-8")
        (root / "install.sh").chmod(0o755)
        wheels = sorted(wheelhouse.glob("*.whl"))
        manifest = {
            "version": version,
            "arch": args.arch,
            "python": args.python,
            "extras": args.extras,
            "wheels": {w.name: sha256(w) for w in wheels},
        }
        (root / "BUNDLE.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        args.out.mkdir(parents=True, exist_ok=True)
        tarball = args.out / f"{name}.tar.gz"
        with tarfile.open(tarball, "w:gz") as archive:
            archive.add(root, arcname=name)
    size_mb = tarball.stat().st_size / 1e6
    print(f"{tarball} ({len(wheels)} wheels, {size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
