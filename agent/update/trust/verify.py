"""Manifest verification: envelope → release signatures → strict parse → policy.

Shared by ``update install`` and the MQTT delivery, so both run exactly the same
checks. Nothing here writes; the installer persists the floor once this passes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from agent.errors import Reason, VerificationError
from agent.update.trust.envelope import parse_envelope, valid_keyids
from agent.update.trust.manifest import MANIFEST_PAYLOAD_TYPE, Manifest, parse_manifest
from agent.update.trust.policy import DeviceFacts, Verdict, channel, check_clock, evaluate
from agent.update.trust.root import Root
from agent.update.trust.state import TrustState

MAX_ENVELOPE_BYTES = 96 * 1024


@dataclass(frozen=True, slots=True)
class Verified:
    manifest: Manifest
    envelope_bytes: bytes
    bundle_sha: str  # sha256 of the signed payload: names the version dir
    verdict: Verdict

    @property
    def channel(self) -> str:
        return channel(self.manifest.fleet, self.manifest.slot)


def verify_manifest(
    envelope_bytes: bytes,
    *,
    root: Root,
    state: TrustState,
    facts: DeviceFacts,
    slots: frozenset[str] | None,
    now_s: float,
    trusted_floor_s: float,
    max_model_bytes: int,
) -> Verified:
    """Raise ``VerificationError`` with the contract reason, or return what may be installed."""
    envelope = parse_envelope(envelope_bytes, MAX_ENVELOPE_BYTES, "manifest")
    if envelope.payload_type != MANIFEST_PAYLOAD_TYPE:
        raise VerificationError(Reason.UNSIGNED, f"not a deployment: {envelope.payload_type!r}")
    root.require(envelope, "release")  # before the payload is parsed
    manifest = parse_manifest(envelope.payload)
    bundle_sha = hashlib.sha256(envelope.payload).hexdigest()
    if manifest.root_version > root.version:
        raise VerificationError(
            Reason.UNSIGNED,
            f"manifest needs root v{manifest.root_version}, trusted is v{root.version}",
        )
    clock = check_clock(now_s, trusted_floor_s)
    if clock is not None:
        raise VerificationError(clock.reason, clock.message)
    if root.expires_s <= now_s:
        raise VerificationError(Reason.EXPIRED, f"trusted root v{root.version} expired")
    if slots is not None and manifest.slot not in slots:
        raise VerificationError(Reason.NOT_TARGETED, f"slot {manifest.slot!r} is not configured")
    if manifest.total_length > max_model_bytes:
        raise VerificationError(
            Reason.TOO_LARGE, f"bundle is {manifest.total_length} bytes, limit {max_model_bytes}"
        )
    downgrade_signed = False
    if manifest.downgrade and "downgrade" in root.roles:
        role = root.roles["downgrade"]
        downgrade_signed = len(valid_keyids(envelope, root.keys, role.keyids)) >= role.threshold
    chan = channel(manifest.fleet, manifest.slot)
    verdict = evaluate(
        manifest,
        bundle_sha,
        facts=facts,
        floor=state.floors.get(chan),
        now_s=now_s,
        trusted_floor_s=trusted_floor_s,
        downgrade_signed=downgrade_signed,
    )
    return Verified(manifest, envelope_bytes, bundle_sha, verdict)
