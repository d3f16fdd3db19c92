"""Vendor the console's front-end libraries from the npm registry (run by hand, then commit).

The console serves these files itself (no CDN at run time). They are small minified files
and are committed with their licences under agent/fleet/console/static/vendor/, so
``make setup``, CI and a wheel need neither node nor the network; this script is how
they got there and how they are upgraded: ``python tools/vendor_web.py`` (needs ``npm``).
VERSIONS.json records each package's version and the SHA-256 of every copied file
(tests/unit/test_console_vendor.py checks the committed files against it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "agent" / "fleet" / "console" / "static" / "vendor"

# package@version -> (files in the package to copy, name of its licence file in the copy)
PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "htmx.org@2.0.4": (("dist/htmx.min.js",), "htmx.LICENSE"),
    "uplot@1.6.32": (("dist/uPlot.iife.min.js", "dist/uPlot.min.css"), "uPlot.LICENSE"),
}


def _unpack(spec: str, work: Path) -> Path:
    out = subprocess.run(
        ["npm", "pack", spec, "--silent", "--pack-destination", str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    tarball = work / out.stdout.strip().splitlines()[-1]
    target = work / tarball.stem
    with tarfile.open(tarball) as tar:
        tar.extractall(target, filter="data")
    return target / "package"


def main() -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    record: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec, (files, licence) in PACKAGES.items():
            package = _unpack(spec, Path(tmp))
            copied = {}
            for rel in (*files, "LICENSE"):
                name = licence if rel == "LICENSE" else Path(rel).name
                shutil.copyfile(package / rel, VENDOR / name)
                copied[name] = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
            version = json.loads((package / "package.json").read_text())["version"]
            record[spec.rsplit("@", 1)[0]] = {"version": version, "files": copied}
    (VENDOR / "VERSIONS.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"vendored {', '.join(PACKAGES)} into {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
