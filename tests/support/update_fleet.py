"""A fleet simulator for update tests: real keys, real bundles, real installer on real files."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.fleet.bundle import BundleSpec, create_bundle
from agent.fleet.keys import init_keys, private_keys, signers_for
from agent.update.store.bundle import MANIFEST_FILE
from agent.update.store.installer import Installer
from agent.update.store.probe import OfflineProbe
from agent.update.store.truststore import load_root_file
from agent.update.trust.envelope import canonical_bytes, parse_envelope, sign_envelope, strict_loads
from agent.update.trust.manifest import MANIFEST_PAYLOAD_TYPE
from agent.update.trust.policy import DeviceFacts

FACTS = DeviceFacts(
    device_id="cam-001",
    fleet="default",
    compat={"arch": "x86_64", "accelerator": "none", "litert": "2.3.0", "tensorrt": "10.3.0"},
)


@dataclass
class FixedClock:
    now: float

    def wall_s(self) -> float:
        return self.now

    def monotonic_s(self) -> float:
        return time.monotonic()


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root``: kind plus link target or content hash (and mode)."""
    out: dict[str, tuple[str, str]] = {}
    if not root.exists():
        return out
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", str(path.readlink()))
            elif path.is_dir():
                out[rel] = ("dir", oct(path.stat().st_mode & 0o777))
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


class Fleet:
    def __init__(
        self,
        base: Path,
        model: Path,
        *,
        threshold: int = 1,
        root_keys: int | None = None,
        release_threshold: int = 1,
    ) -> None:
        self.base = base
        self.keys = base / "keys"
        self.model = model
        init_keys(
            self.keys, threshold=threshold, root_keys=root_keys, release_threshold=release_threshold
        )
        self._n = 0

    @property
    def root_path(self) -> Path:
        return self.keys / "roots" / "1.root.json"

    def spec(self, **changes: Any) -> BundleSpec:
        base = BundleSpec(
            model=self.model, slot="detector", fleet="default", manifest_version=1, release=1
        )
        return replace(base, **changes)

    def bundle(self, model: Path | None = None, **changes: Any) -> Path:
        self._n += 1
        out = self.base / f"bundle-{self._n}"
        create_bundle(self.spec(model=model or self.model, **changes), self.keys, out)
        return out

    def payload(self, bundle: Path) -> dict[str, Any]:
        env = parse_envelope((bundle / MANIFEST_FILE).read_bytes(), 1 << 20)
        doc: dict[str, Any] = strict_loads(env.payload)
        return doc

    def resign(
        self, bundle: Path, doc: dict[str, Any], role: str = "release", extra: tuple[str, ...] = ()
    ) -> bytes:
        """Re-sign an edited payload with the keys of ``role`` (+ ``extra`` roles) and write it."""
        root = load_root_file(self.keys / "root.json")
        signers = signers_for(self.keys, root, role)
        for name in extra:
            signers += signers_for(self.keys, root, name)
        data = sign_envelope(MANIFEST_PAYLOAD_TYPE, canonical_bytes(doc), signers).to_bytes()
        (bundle / MANIFEST_FILE).write_bytes(data)
        return data

    def all_keys(self) -> dict[str, Any]:
        return private_keys(self.keys)


def make_installer(state_dir: Path, fleet: Fleet, **kwargs: Any) -> Installer:
    kwargs.setdefault("facts", FACTS)
    kwargs.setdefault("probe", OfflineProbe())
    kwargs.setdefault("slots", frozenset({"detector"}))
    return Installer(state_dir, provisioned_root=fleet.root_path, **kwargs)


def install_bundle(installer: Installer, bundle: Path) -> Any:
    """The ``update install`` sequence, in process."""
    from agent.update.store.bundle import check_chunk_index, read_manifest, read_root_chain

    installer.recover()
    installer.apply_roots(read_root_chain(bundle, installer.trust.load_root().version))
    verified = installer.verify(read_manifest(bundle))
    check_chunk_index(bundle, verified.manifest)
    return installer.install(verified, bundle)
