"""Trusted root metadata (TUF-shaped): keys, roles with thresholds, N→N+1 rotation.

Pure: bytes in, ``Root`` out. Persisting the latest root is the trust store's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from agent.errors import Reason, VerificationError
from agent.update.trust import crypto
from agent.update.trust.envelope import Envelope, parse_envelope, require_threshold, strict_loads

ROOT_PAYLOAD_TYPE = "application/vnd.edgeagent.root+json"
SPEC_MAJOR = "1"
MAX_ROOT_BYTES = 512 * 1024
MAX_ROOT_HOPS = 32
REQUIRED_ROLES = ("root", "release", "heartbeat")
# "command": optional; a root that lists it makes devices require signed config commands.
KNOWN_ROLES = (*REQUIRED_ROLES, "downgrade", "command")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def parse_time(value: object, field: str) -> float:
    """RFC 3339 UTC with ``Z`` and whole seconds → epoch seconds."""
    if not isinstance(value, str) or not _TIME_RE.match(value):
        raise ValueError(f"{field} must be an RFC 3339 UTC time like 2026-01-01T00:00:00Z")
    parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def format_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(int(epoch_s), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def positive_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be a positive integer")
    return value


@dataclass(frozen=True, slots=True)
class Role:
    keyids: frozenset[str]
    threshold: int


@dataclass(frozen=True, slots=True)
class Root:
    version: int
    expires_s: float
    keys: Mapping[str, str]  # keyid → public key hex
    roles: Mapping[str, Role]
    envelope_bytes: bytes  # exactly what was verified, for persisting unchanged

    def role(self, name: str) -> Role:
        role = self.roles.get(name)
        if role is None:
            raise VerificationError(Reason.UNSIGNED, f"root v{self.version} has no {name} role")
        return role

    def require(self, envelope: Envelope, role_name: str) -> frozenset[str]:
        """Key ids of ``role_name`` that validly signed ``envelope``; raises below threshold."""
        role = self.role(role_name)
        return require_threshold(envelope, self.keys, role.keyids, role.threshold, role_name)


def _parse_role(name: str, raw: Any, keys: Mapping[str, str]) -> Role:
    if not isinstance(raw, dict) or not isinstance(raw.get("keyids"), list):
        raise TypeError(f"role {name} must have a keyids list")
    keyids = frozenset(str(k) for k in raw["keyids"])
    if len(keyids) != len(raw["keyids"]):
        raise ValueError(f"role {name} lists a key id twice")
    unknown = sorted(k for k in keyids if k not in keys)
    if unknown:
        raise ValueError(f"role {name} names unknown keys {unknown}")
    threshold = positive_int(raw.get("threshold"), f"roles.{name}.threshold")
    if threshold > len(keyids):
        raise ValueError(f"role {name} threshold {threshold} exceeds its {len(keyids)} keys")
    return Role(keyids=keyids, threshold=threshold)


def _root_doc(payload: bytes, envelope_bytes: bytes) -> Root:
    doc = strict_loads(payload)
    if not isinstance(doc, dict) or doc.get("_type") != "root":
        raise ValueError("_type must be root")
    if str(doc.get("spec_version", "")).split(".")[0] != SPEC_MAJOR:
        raise ValueError(f"unsupported spec_version {doc.get('spec_version')!r}")
    version = positive_int(doc.get("version"), "version")
    expires_s = parse_time(doc.get("expires"), "expires")
    keys: dict[str, str] = {}
    raw_keys = doc.get("keys")
    if not isinstance(raw_keys, dict):
        raise TypeError("keys must be an object")
    for kid, entry in raw_keys.items():
        if not isinstance(entry, dict) or entry.get("keytype") != "ed25519":
            raise ValueError(f"key {kid} must be ed25519")
        public = str(entry.get("public", ""))
        if not _HEX64.match(public) or crypto.key_id(bytes.fromhex(public)) != kid:
            raise ValueError(f"key id {kid} does not match its public key")
        keys[kid] = public
    raw_roles = doc.get("roles")
    if not isinstance(raw_roles, dict):
        raise TypeError("roles must be an object")
    missing = [r for r in REQUIRED_ROLES if r not in raw_roles]
    if missing:
        raise ValueError(f"roles missing: {missing}")
    roles = {n: _parse_role(n, raw_roles[n], keys) for n in KNOWN_ROLES if n in raw_roles}
    return Root(version, expires_s, keys, roles, envelope_bytes)


def parse_root(payload: bytes, envelope_bytes: bytes) -> Root:
    """Strictly parse a root payload (signatures are checked by the callers)."""
    try:
        return _root_doc(payload, envelope_bytes)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise VerificationError(Reason.MALFORMED, f"root metadata invalid: {exc}") from exc


def _root_envelope(data: bytes) -> Envelope:
    envelope = parse_envelope(data, MAX_ROOT_BYTES, "root")
    if envelope.payload_type != ROOT_PAYLOAD_TYPE:
        raise VerificationError(Reason.UNSIGNED, f"not a root: {envelope.payload_type!r}")
    return envelope


def load_root_bytes(data: bytes) -> Root:
    """A provisioned root: must carry a threshold of its own root keys (trust on provisioning)."""
    envelope = _root_envelope(data)
    root = parse_root(envelope.payload, data)
    root.require(envelope, "root")
    return root


def rotate(trusted: Root, data: bytes) -> Root:
    """Accept root N+1: threshold of the trusted root keys, then of its own, version exactly N+1."""
    envelope = _root_envelope(data)
    trusted.require(envelope, "root")  # before the new payload is even parsed
    new = parse_root(envelope.payload, data)
    if new.version != trusted.version + 1:
        raise VerificationError(
            Reason.ROLLBACK,
            f"root version {new.version} does not follow trusted {trusted.version}",
            trusted=trusted.version,
            got=new.version,
        )
    new.require(envelope, "root")
    return new


def walk(
    trusted: Root, chain: Sequence[bytes], now_s: float, max_hops: int = MAX_ROOT_HOPS
) -> Root:
    """Apply consecutive roots; intermediate expiry is ignored, the final root must be fresh."""
    if len(chain) > max_hops:
        raise VerificationError(
            Reason.TOO_LARGE, f"{len(chain)} root rotations exceed the limit {max_hops}"
        )
    current = trusted
    for data in chain:
        current = rotate(current, data)
    if current.expires_s <= now_s:
        raise VerificationError(
            Reason.EXPIRED, f"root v{current.version} expired", version=current.version
        )
    return current


def release_keys_changed(old: Root, new: Root) -> bool:
    """A rotated release key means the old floors may be attacker-inflated (fast-forward)."""
    return old.role("release").keyids != new.role("release").keyids
