"""Persisted trust: the latest verified root and the per-channel floors (``<state_dir>/trust``).

Written atomically and only after validation. Missing or unreadable state on a
device that already installed updates fails closed with ``trust_state_corrupt``.
"""

from __future__ import annotations

from pathlib import Path

from agent.errors import Reason, VerificationError
from agent.fsutil import atomic_write_bytes, atomic_write_json
from agent.log import get_logger
from agent.update.trust.policy import Floor
from agent.update.trust.root import Root, load_root_bytes, release_keys_changed, walk
from agent.update.trust.state import TrustState, parse_state

log = get_logger(__name__)


def load_root_file(path: Path) -> Root:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerificationError(
            Reason.TRUST_STATE_CORRUPT, f"cannot read root {path}: {exc}", path=str(path)
        ) from exc
    return load_root_bytes(data)


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
            return parse_state(self.state_path.read_bytes())
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

    def apply_chain(self, chain: list[bytes], now_s: float) -> Root:
        """Walk root rotations N→N+1…; persist the result (floors reset if release keys changed)."""
        trusted = self.load_root()
        state = self.load_state()
        if not chain:
            return trusted
        new = walk(trusted, chain, now_s)
        self.save_root(new)
        if release_keys_changed(trusted, new):
            # Fast-forward recovery: floors set under the old release keys may be inflated.
            kept = {c: Floor(0, "", f.release) for c, f in state.floors.items()}
            self.save_state(TrustState(floors=kept, failed=state.failed))
            log.warning("floors_reset", root_version=new.version)
        else:
            self.save_state(state)
        log.info("root_rotated", old=trusted.version, new=new.version)
        return new
