"""Persisted update state machine, one JSON file per slot under ``<state_dir>/journal``.

idle → verified → staged → activating → trial → committed
                                          └──→ rolling_back → rolled_back
A transition counter per deployment ends a livelock in terminal ``inconsistent``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.errors import UpdateError
from agent.fsutil import atomic_write_bytes, atomic_write_json, remove_stale_temps
from agent.log import get_logger
from agent.update.store.models import ModelStore
from agent.update.store.truststore import TrustStore
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import Manifest, parse_manifest

log = get_logger(__name__)
DEFAULT_MAX_TRANSITIONS = 28


class Phase(str, enum.Enum):
    IDLE = "idle"
    VERIFIED = "verified"
    STAGED = "staged"
    ACTIVATING = "activating"
    TRIAL = "trial"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    INCONSISTENT = "inconsistent"

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({Phase.IDLE, Phase.COMMITTED, Phase.ROLLED_BACK, Phase.INCONSISTENT})


@dataclass(frozen=True, slots=True)
class SlotJournal:
    slot: str
    phase: Phase = Phase.IDLE
    deployment_id: str = ""
    manifest_version: int = 0
    release: int = 0
    bundle_sha: str = ""
    prev_sha: str | None = None
    source_dir: str = ""
    attempts: int = 0
    transitions: int = 0
    last_result: dict[str, str | None] = field(default_factory=dict)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["phase"] = self.phase.value
        return doc


class LoopBreakError(Exception):
    """The deployment went through more transitions than allowed."""


class Journal:
    def __init__(self, state_dir: Path, max_transitions: int = DEFAULT_MAX_TRANSITIONS) -> None:
        self.dir = state_dir / "journal"
        self.max_transitions = max_transitions

    def path(self, slot: str) -> Path:
        return self.dir / f"{slot}.json"

    def pending_path(self, slot: str) -> Path:
        return self.dir / f"{slot}.manifest.json"

    def load(self, slot: str) -> SlotJournal:
        try:
            doc = json.loads(self.path(slot).read_text(encoding="utf-8"))
            doc["phase"] = Phase(doc["phase"])
            return SlotJournal(**doc)
        except FileNotFoundError:
            return SlotJournal(slot=slot)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # Unreadable journal: the store pointers are still the truth; start clean.
            log.warning("journal_unreadable", slot=slot, error=str(exc))
            return SlotJournal(
                slot=slot, last_result={"outcome": "failed", "reason": "interrupted"}
            )

    def slots(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if "." not in p.stem)

    def save(self, entry: SlotJournal, phase: Phase, **changes: Any) -> SlotJournal:
        """Persist a transition; raises ``LoopBreakError`` past the per-deployment limit."""
        if changes.get("source_dir"):  # absolute only: a relative path means another dir later
            changes["source_dir"] = str(Path(changes["source_dir"]).absolute())
        new = replace(entry, phase=phase, transitions=entry.transitions + 1, **changes)
        if new.transitions > self.max_transitions and phase is not Phase.INCONSISTENT:
            raise LoopBreakError(f"{new.transitions} transitions")
        atomic_write_json(self.path(entry.slot), new.to_json())
        log.info("update_phase", slot=entry.slot, phase=phase.value, attempts=new.attempts)
        return new

    def save_pending(self, slot: str, envelope_bytes: bytes) -> None:
        atomic_write_bytes(self.pending_path(slot), envelope_bytes)

    def pending(self, slot: str) -> bytes | None:
        try:
            return self.pending_path(slot).read_bytes()
        except OSError:
            return None

    def clear_pending(self, slot: str) -> None:
        self.pending_path(slot).unlink(missing_ok=True)

    def prune(self) -> None:
        remove_stale_temps(self.dir)


def _version_ref(store: ModelStore, slot: str, sha: str | None) -> dict[str, Any] | None:
    if sha is None:
        return None
    info = store.version_info(slot, sha) or {}
    return {
        "sha256": sha,
        "manifest_version": info.get("manifest_version"),
        "release": info.get("release"),
        "deployment_id": info.get("deployment_id"),
        "model_file": info.get("model_file"),
    }


def read_status(state_dir: Path, provisioned_root: Path | None = None) -> dict[str, Any]:
    """The ``update status --json`` document, read from disk only (safe while the daemon runs)."""
    store = ModelStore(state_dir)
    journal = Journal(state_dir)
    slots: dict[str, Any] = {}
    for slot in sorted(set(store.slots()) | set(journal.slots())):
        entry = journal.load(slot)
        slots[slot] = {
            "active": _version_ref(store, slot, store.current_sha(slot)),
            "previous": _version_ref(store, slot, store.previous_sha(slot)),
            "phase": entry.phase.value,
            "attempts": entry.attempts,
            "deployment_id": entry.deployment_id or None,
            "manifest_version": entry.manifest_version or None,
            "last_result": {
                "outcome": entry.last_result.get("outcome"),
                "reason": entry.last_result.get("reason"),
            },
            "detail": entry.detail,
        }
    trust = TrustStore(state_dir, provisioned_root or state_dir / "trust" / "root.json")
    return {"slots": slots, "trust": {"root_version": trust.root_version()}}


def pending_manifest(journal: Journal, trust: TrustStore, slot: str) -> Manifest | None:
    """The manifest a mid-deployment slot was installing, re-checked against the trusted root."""
    data = journal.pending(slot)
    if data is None:
        return None
    try:
        envelope = parse_envelope(data, len(data), "pending manifest")
        trust.load_root().require(envelope, "release")
        return parse_manifest(envelope.payload)
    except UpdateError as exc:
        log.warning("pending_manifest_invalid", slot=slot, error=str(exc))
        return None
