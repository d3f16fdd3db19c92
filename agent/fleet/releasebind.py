"""``bundle create --sibling DIR``: bind per-slot bundles into one signed release set.

The new bundle's manifest and every sibling bundle's manifest get the same
``release_set`` (docs/updates.md "Release sets"); the siblings are re-signed with the
release keys (their files and chunk index are untouched: a member's digest leaves the
``release_set`` field out). A sibling must be a bundle of the same fleet and another
slot, signed by the release keys the fleet's current root trusts: the tool never signs
bytes it did not verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import CommandError, Reason, UpdateError
from agent.fleet.keys import signers_for
from agent.fsutil import atomic_write_bytes
from agent.update.store.bundle import MANIFEST_FILE
from agent.update.trust.envelope import canonical_bytes, parse_envelope, sign_envelope, strict_loads
from agent.update.trust.manifest import MANIFEST_PAYLOAD_TYPE, parse_manifest
from agent.update.trust.releaseset import FIELD, MAX_MEMBERS, member_digest
from agent.update.trust.root import Root
from agent.update.trust.verify import MAX_ENVELOPE_BYTES


@dataclass(frozen=True, slots=True)
class Sibling:
    path: Path  # the sibling's manifest.json
    slot: str
    document: dict[str, Any]


def read_sibling(bundle_dir: Path, root: Root, fleet: str) -> Sibling:
    path = bundle_dir / MANIFEST_FILE
    try:
        envelope = parse_envelope(path.read_bytes(), MAX_ENVELOPE_BYTES, str(path))
        if envelope.payload_type != MANIFEST_PAYLOAD_TYPE:
            raise CommandError(Reason.MALFORMED, f"{path} is not a deployment manifest")
        root.require(envelope, "release")
        manifest = parse_manifest(envelope.payload)
        document: dict[str, Any] = strict_loads(envelope.payload)
    except OSError as exc:
        raise CommandError(Reason.MALFORMED, f"--sibling {bundle_dir}: {exc}") from exc
    except UpdateError as exc:
        raise CommandError(exc.reason, f"--sibling {bundle_dir}: {exc.message}") from exc
    if manifest.fleet != fleet:
        raise CommandError(
            Reason.MALFORMED,
            f"--sibling {bundle_dir} is for fleet {manifest.fleet!r}, not {fleet!r}",
        )
    return Sibling(path, manifest.slot, document)


def bind_release_set(
    document: dict[str, Any],
    sibling_dirs: Sequence[Path],
    release: int,
    root: Root,
) -> list[Sibling]:
    """Add the release set to ``document`` (in place); return the siblings to re-sign."""
    slot = document["targets"]["slot"]
    siblings = [read_sibling(d, root, document["targets"]["fleet"]) for d in sibling_dirs]
    slots = [slot, *(s.slot for s in siblings)]
    if len(set(slots)) != len(slots):
        raise CommandError(Reason.MALFORMED, f"a release set names each slot once, got {slots}")
    if len(slots) > MAX_MEMBERS:
        raise CommandError(Reason.MALFORMED, f"a release set has at most {MAX_MEMBERS} slots")
    if release < 1:
        raise CommandError(Reason.MALFORMED, "--release-set must be a positive integer")
    members = {slot: member_digest(document)}
    members.update({s.slot: member_digest(s.document) for s in siblings})
    release_set = {"release": release, "members": members}
    document[FIELD] = release_set
    for sibling in siblings:
        sibling.document[FIELD] = release_set
    return siblings


def write_siblings(siblings: Sequence[Sibling], keys_dir: Path, root: Root) -> None:
    """Re-sign each sibling's manifest with its release set (after the new bundle is written)."""
    for sibling in siblings:
        signers = signers_for(keys_dir, root, "release")
        if sibling.document.get("model", {}).get("downgrade"):
            signers += signers_for(keys_dir, root, "downgrade")
        envelope = sign_envelope(MANIFEST_PAYLOAD_TYPE, canonical_bytes(sibling.document), signers)
        atomic_write_bytes(sibling.path, envelope.to_bytes())
