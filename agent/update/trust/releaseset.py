"""Release sets: per-slot manifests bound into one signed release (TUF's snapshot, kept small).

A fleet that runs several slots together (a detector and its classifier) signs each
slot's manifest with the same ``release_set``::

    "release_set": {"release": 5, "members": {"detector": "<sha256>", "classifier": "<sha256>"}}

A member's digest is the SHA-256 of its manifest payload in canonical form *without* its
``release_set`` field (``member_digest``), so every member can name every other one (a
digest of the whole payload would be circular). Each manifest carries the whole set, so
the device needs no extra document or round trip: before it installs a member it checks
the set against the manifests installed, or being installed, in the sibling slots
(``check_siblings``). Pure: no IO here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.update.trust.envelope import canonical_bytes, strict_loads

FIELD = "release_set"
MAX_MEMBERS = 16
_SLOT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ReleaseSet:
    release: int
    # (slot, member digest) pairs, sorted by slot: hashable and order-free.
    members: tuple[tuple[str, str], ...]

    def digest_of(self, slot: str) -> str | None:
        return dict(self.members).get(slot)

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "members": dict(self.members)}


@dataclass(frozen=True, slots=True)
class Member:
    """One installed (or pending) manifest as the release check sees it."""

    digest: str
    release_set: ReleaseSet | None


def member_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical payload without ``release_set``."""
    rest = {k: v for k, v in document.items() if k != FIELD}
    return hashlib.sha256(canonical_bytes(rest)).hexdigest()


def parse_release_set(raw: Any, slot: str, own_digest: str) -> ReleaseSet | None:
    """The manifest's ``release_set`` (None when absent); ValueError/TypeError when malformed."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"release", "members"}:
        raise ValueError("release_set must be {release, members}")
    release = raw["release"]
    if isinstance(release, bool) or not isinstance(release, int) or release < 1:
        raise ValueError("release_set.release must be a positive integer")
    members = raw["members"]
    if not isinstance(members, dict) or not 2 <= len(members) <= MAX_MEMBERS:
        raise ValueError(f"release_set.members must name 2 to {MAX_MEMBERS} slots")
    for name, digest in members.items():
        if not _SLOT_RE.match(name) or not isinstance(digest, str) or not _HEX64.match(digest):
            raise ValueError(f"release_set.members[{name!r}] is not a slot and a sha256")
    if members.get(slot) != own_digest:
        raise ValueError(f"release_set does not name this manifest as slot {slot!r}")
    return ReleaseSet(release, tuple(sorted(members.items())))


def member_of(payload: bytes) -> Member:
    """An already verified payload (an installed version's) as a release member."""
    doc = strict_loads(payload)
    if not isinstance(doc, dict):
        raise TypeError("manifest must be an object")
    slot = doc.get("targets", {}).get("slot") if isinstance(doc.get("targets"), dict) else None
    digest = member_digest(doc)
    return Member(digest, parse_release_set(doc.get(FIELD), str(slot), digest))


def check_siblings(
    slot: str, candidate: ReleaseSet | None, siblings: Mapping[str, Iterable[Member]]
) -> str | None:
    """Why installing ``candidate`` in ``slot`` would mix releases, or None when it may go on.

    ``siblings``: per other slot, the manifests active or being installed there. A sibling on
    an older release (or in none) is the upgrade under way: it follows. Refused: a sibling
    on a newer release (this manifest would take the set backwards), or one of the same
    release that is not the member this set names (two sets never signed together).
    A manifest without a release set is not checked: single-slot fleets are unaffected.
    """
    if candidate is None:
        return None
    for other, want in candidate.members:
        if other == slot:
            continue
        for member in siblings.get(other, ()):
            have = member.release_set
            if have is None or have.release < candidate.release:
                continue
            if have.release > candidate.release:
                return (
                    f"slot {other!r} runs release {have.release}, newer than this "
                    f"manifest's release {candidate.release}"
                )
            if member.digest != want or have != candidate:
                return (
                    f"slot {other!r} runs another manifest of release {candidate.release} "
                    "than this release set names"
                )
    return None
