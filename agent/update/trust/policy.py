"""Pure update decisions: clock, freshness, targeting, compatibility, version floors, downgrade.

Every check returns ``None`` (fine) or a ``Rejection`` with the contract's reason;
``evaluate`` runs them in TUF order and raises the first one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.errors import Reason, VerificationError
from agent.update.trust.manifest import Manifest
from agent.update.trust.root import format_time


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class Floor:
    """Highest manifest accepted on a (fleet, slot) channel, and the committed release."""

    manifest_version: int
    manifest_sha256: str
    release: int = 0


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    device_id: str
    fleet: str
    # arch, accelerator, agent, runtime versions, compute_capability, tensorrt, ...
    compat: Mapping[str, str]


class Verdict(enum.Enum):
    INSTALL = "install"
    SAME = "same"  # the very manifest already accepted: install only if not active yet


def channel(fleet: str, slot: str) -> str:
    return f"{fleet}/{slot}"


def check_clock(now_s: float, trusted_floor_s: float) -> Rejection | None:
    """A clock behind the last known good time cannot judge expiry at all (T22)."""
    if now_s < trusted_floor_s:
        return Rejection(
            Reason.CLOCK_INVALID,
            f"clock {format_time(now_s)} is before last known good {format_time(trusted_floor_s)}",
        )
    return None


def check_expiry(manifest: Manifest, now_s: float) -> Rejection | None:
    if manifest.expires_s <= now_s:
        return Rejection(Reason.EXPIRED, f"manifest expired at {format_time(manifest.expires_s)}")
    return None


def check_targeting(manifest: Manifest, facts: DeviceFacts) -> Rejection | None:
    if manifest.fleet != facts.fleet:
        return Rejection(Reason.NOT_TARGETED, f"manifest is for fleet {manifest.fleet!r}")
    if manifest.devices is not None and facts.device_id not in manifest.devices:
        return Rejection(Reason.NOT_TARGETED, f"device {facts.device_id!r} is not targeted")
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def _compatible(key: str, wanted: str, have: str) -> bool:
    if key.endswith("_min"):
        return _version(have) >= _version(wanted)
    if key == "tensorrt":
        # Serialized engines are tied to the TensorRT major.minor they were built with.
        return _version(have)[:2] == _version(wanted)[:2]
    return have == wanted


def check_compat(manifest: Manifest, facts: DeviceFacts) -> Rejection | None:
    for key, wanted in sorted(manifest.compat.items()):
        base = key.removesuffix("_min")
        have = facts.compat.get(base)
        if have is None or not _compatible(key, wanted, have):
            return Rejection(
                Reason.INCOMPATIBLE, f"compat {key}={wanted!r}, device has {base}={have!r}"
            )
    return None


def check_version(manifest: Manifest, manifest_sha256: str, floor: Floor | None) -> Verdict:
    if floor is None or manifest.manifest_version > floor.manifest_version:
        return Verdict.INSTALL
    if manifest.manifest_version < floor.manifest_version:
        raise VerificationError(
            Reason.ROLLBACK,
            f"manifest_version {manifest.manifest_version} is below {floor.manifest_version}",
            floor=floor.manifest_version,
        )
    if manifest_sha256 != floor.manifest_sha256:
        raise VerificationError(
            Reason.VERSION_CONFLICT,
            f"manifest_version {manifest.manifest_version} already seen with other content",
        )
    return Verdict.SAME


def check_release(
    manifest: Manifest, floor: Floor | None, downgrade_signed: bool
) -> Rejection | None:
    committed = floor.release if floor is not None else 0
    if manifest.release >= committed:
        return None
    if not manifest.downgrade:
        return Rejection(
            Reason.DOWNGRADE_NOT_AUTHORISED,
            f"release {manifest.release} is below committed {committed} without downgrade",
        )
    if not downgrade_signed:
        return Rejection(Reason.UNSIGNED, "downgrade is not signed by the downgrade role")
    return None


def _raise(rejection: Rejection | None) -> None:
    if rejection is not None:
        raise VerificationError(rejection.reason, rejection.message)


def evaluate(
    manifest: Manifest,
    manifest_sha256: str,
    *,
    facts: DeviceFacts,
    floor: Floor | None,
    now_s: float,
    trusted_floor_s: float,
    downgrade_signed: bool,
) -> Verdict:
    """All policy checks in order; raises ``VerificationError`` with the first reason."""
    _raise(check_clock(now_s, trusted_floor_s))
    _raise(check_expiry(manifest, now_s))
    _raise(check_targeting(manifest, facts))
    _raise(check_compat(manifest, facts))
    verdict = check_version(manifest, manifest_sha256, floor)
    _raise(check_release(manifest, floor, downgrade_signed))
    return verdict
