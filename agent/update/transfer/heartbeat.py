"""Signed fleet freshness heartbeat (TUF timestamp analogue): format, signing, checking.

Payload (canonical JSON, signed by the root's ``heartbeat`` role)::

    {"_type": "heartbeat", "spec_version": "1.0", "version": N, "expires": RFC3339,
     "fleet": F, "latest": {"<slot>": {"manifest_version": N, "manifest_sha256": hex}}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import Reason, VerificationError
from agent.update.trust.envelope import canonical_bytes, parse_envelope, sign_envelope, strict_loads
from agent.update.trust.root import Root, format_time, parse_time, positive_int

HEARTBEAT_PAYLOAD_TYPE = "application/vnd.edgeagent.heartbeat+json"
MAX_HEARTBEAT_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Latest:
    manifest_version: int
    manifest_sha256: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    version: int
    expires_s: float
    fleet: str
    latest: Mapping[str, Latest]

    def expired(self, now_s: float) -> bool:
        return now_s >= self.expires_s


def make_heartbeat(
    *,
    version: int,
    expires_s: float,
    fleet: str,
    latest: Mapping[str, Latest],
    keys: Iterable[Ed25519PrivateKey],
) -> bytes:
    doc = {
        "_type": "heartbeat",
        "spec_version": "1.0",
        "version": version,
        "expires": format_time(expires_s),
        "fleet": fleet,
        "latest": {
            slot: {"manifest_version": x.manifest_version, "manifest_sha256": x.manifest_sha256}
            for slot, x in latest.items()
        },
    }
    return sign_envelope(HEARTBEAT_PAYLOAD_TYPE, canonical_bytes(doc), keys).to_bytes()


def _object(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise TypeError("expected a JSON object")
    return value


def verify_heartbeat(data: bytes, root: Root, fleet: str) -> Heartbeat:
    """Signature (heartbeat role) before parsing; expiry is the caller's decision (freeze)."""
    envelope = parse_envelope(data, MAX_HEARTBEAT_BYTES, "heartbeat")
    if envelope.payload_type != HEARTBEAT_PAYLOAD_TYPE:
        raise VerificationError(Reason.UNSIGNED, f"not a heartbeat: {envelope.payload_type!r}")
    root.require(envelope, "heartbeat")
    try:
        doc = _object(strict_loads(envelope.payload))
        if doc.get("_type") != "heartbeat":
            raise ValueError("_type must be heartbeat")  # noqa: TRY301 - one translation point below
        latest_raw = _object(doc.get("latest", {}))
        latest = {
            str(slot): Latest(
                positive_int(_object(v)["manifest_version"], "manifest_version"),
                str(_object(v)["manifest_sha256"]),
            )
            for slot, v in latest_raw.items()
        }
        beat = Heartbeat(
            version=positive_int(doc.get("version"), "version"),
            expires_s=parse_time(doc.get("expires"), "expires"),
            fleet=str(doc.get("fleet")),
            latest=latest,
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise VerificationError(Reason.MALFORMED, f"heartbeat invalid: {exc}") from exc
    if beat.fleet != fleet:
        raise VerificationError(Reason.NOT_TARGETED, f"heartbeat for fleet {beat.fleet!r}")
    return beat
