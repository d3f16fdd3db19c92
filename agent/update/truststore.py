"""Persisted trust: the latest verified root and the per-channel floors (``<state_dir>/trust``).

Written atomically and only after validation. Missing or unreadable state on a
device that already installed updates fails closed with ``trust_state_corrupt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.errors import Reason, VerificationError
from agent.fsutil import atomic_write_bytes, atomic_write_json
from agent.log import get_logger
from agent.update.envelope import strict_loads
from agent.update.policy import Floor
from agent.update.trust import Root, load_root_bytes, load_root_file

log = get_logger(__name__)
MAX_FAILED_PER_CHANNEL = 16


@dataclass(frozen=True, slots=True)
class TrustState:
    floors: dict[str, Floor] = field(default_factory=dict)
    # Bundles that failed their trial, per channel: not retried under the same manifest.
    failed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def with_floor(self, chan: str, floor: Floor) -> TrustState:
        return replace(self, floors={**self.floors, chan: floor})

    def with_failed(self, chan: str, bundle_sha: str) -> TrustState:
        old = tuple(s for s in self.failed.get(chan, ()) if s != bundle_sha)
        kept = (*old, bundle_sha)[-MAX_FAILED_PER_CHANNEL:]
        return replace(self, failed={**self.failed, chan: kept})

    def to_json(self) -> dict[str, object]:
        return {
            "floors": {
                c: {
                    "manifest_version": f.manifest_version,
                    "manifest_sha256": f.manifest_sha256,
                    "release": f.release,
                }
                for c, f in sorted(self.floors.items())
            },
            "failed": {c: list(v) for c, v in sorted(self.failed.items())},
        }


def _parse_state(data: bytes) -> TrustState:
    doc = strict_loads(data)
    floors: dict[str, Floor] = {}
    for chan, raw in doc["floors"].items():
        version, sha, release = raw["manifest_version"], raw["manifest_sha256"], raw["release"]
        if not (isinstance(version, int) and isinstance(sha, str) and isinstance(release, int)):
            raise TypeError(f"floor {chan} malformed")
        floors[str(chan)] = Floor(version, sha, release)
    failed = {str(c): tuple(str(s) for s in v) for c, v in doc["failed"].items()}
    return TrustState(floors=floors, failed=failed)


class TrustStore:
    def __init__(self, state_dir: Path, provisioned_root: Path) -> None:
        self.dir = state_dir / "trust"
        self.root_path = self.dir / "root.json"
        self.state_path = self.dir / "state.json"
        self.models_dir = state_dir / "models"
        self.provisioned_root = provisioned_root

    def _initialised(self) -> bool:
        has_models = self.models_dir.is_dir() and any(self.models_dir.iterdir())
        return self.root_path.exists() or self.state_path.exists() or has_models

    def load_root(self) -> Root:
        if not self.root_path.exists():
            if self._initialised():
                raise VerificationError(Reason.TRUST_STATE_CORRUPT, "trusted root is missing")
            return load_root_file(self.provisioned_root)
        try:
            return load_root_bytes(self.root_path.read_bytes())
        except (VerificationError, OSError) as exc:
            raise VerificationError(
                Reason.TRUST_STATE_CORRUPT, f"trusted root unreadable: {exc}"
            ) from exc

    def load_state(self) -> TrustState:
        if not self.state_path.exists():
            if self._initialised():
                raise VerificationError(Reason.TRUST_STATE_CORRUPT, "trust state is missing")
            return TrustState()
        try:
            return _parse_state(self.state_path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise VerificationError(
                Reason.TRUST_STATE_CORRUPT, f"trust state unreadable: {exc}"
            ) from exc

    def save_state(self, state: TrustState) -> None:
        atomic_write_json(self.state_path, state.to_json(), mode=0o600)

    def save_root(self, root: Root) -> None:
        atomic_write_bytes(self.root_path, root.envelope_bytes, mode=0o644)

    def ensure_initialised(self, root: Root, state: TrustState) -> None:
        """First install on a fresh device: pin the provisioned root and an empty state."""
        if not self.root_path.exists():
            self.save_root(root)
        if not self.state_path.exists():
            self.save_state(state)

    def root_version(self) -> int | None:
        try:
            return self.load_root().version
        except VerificationError:
            return None
