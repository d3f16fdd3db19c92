"""Trust state as data: per-channel floors and failed bundles, with its JSON form (no IO)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from agent.update.trust.envelope import strict_loads
from agent.update.trust.policy import Floor

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


def parse_state(data: bytes) -> TrustState:
    doc = strict_loads(data)
    floors: dict[str, Floor] = {}
    for chan, raw in doc["floors"].items():
        version, sha, release = raw["manifest_version"], raw["manifest_sha256"], raw["release"]
        if not (isinstance(version, int) and isinstance(sha, str) and isinstance(release, int)):
            raise TypeError(f"floor {chan} malformed")
        floors[str(chan)] = Floor(version, sha, release)
    failed = {str(c): tuple(str(s) for s in v) for c, v in doc["failed"].items()}
    return TrustState(floors=floors, failed=failed)
