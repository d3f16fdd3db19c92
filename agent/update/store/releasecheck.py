"""The device side of release sets: read what the sibling slots run, let the pure check decide.

What a sibling "runs" is its ``current`` version's signed manifest (kept in the version
dir) and, while a deployment of it is under way, the pending manifest in its journal.
A sibling whose manifest cannot be read refuses the candidate (fail closed); a version
dir from before manifests were kept there counts as no release set.
"""

from __future__ import annotations

from agent.errors import Reason, VerificationError
from agent.update.store.journal import Journal
from agent.update.store.models import MANIFEST_NAME, ModelStore
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.releaseset import Member, check_siblings, member_of
from agent.update.trust.verify import MAX_ENVELOPE_BYTES, Verified


def _member(envelope_bytes: bytes, where: str) -> Member:
    try:
        # Bounded: the envelope (and so its payload) is capped before parsing.
        return member_of(parse_envelope(envelope_bytes, MAX_ENVELOPE_BYTES, where).payload)
    except (VerificationError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise VerificationError(
            Reason.RELEASE_MISMATCH, f"cannot read the manifest {where}: {exc}"
        ) from exc


def sibling_members(store: ModelStore, journal: Journal, slot: str) -> list[Member]:
    """The manifests active or being installed in ``slot``."""
    found: list[Member] = []
    sha = store.current_sha(slot)
    if sha is not None:
        path = store.version_dir(slot, sha) / MANIFEST_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None  # installed before version dirs kept their manifest
        except OSError as exc:
            raise VerificationError(Reason.RELEASE_MISMATCH, f"cannot read {path}: {exc}") from exc
        if data is not None:
            found.append(_member(data, f"of slot {slot!r}"))
    pending = journal.pending(slot)
    if pending is not None:
        found.append(_member(pending, f"pending in slot {slot!r}"))
    return found


def require_release_set(store: ModelStore, journal: Journal, verified: Verified) -> None:
    """Raise ``release_mismatch`` when installing ``verified`` would mix releases across slots."""
    manifest = verified.manifest
    release_set = manifest.release_set
    if release_set is None:
        return
    siblings = {
        other: sibling_members(store, journal, other)
        for other, _ in release_set.members
        if other != manifest.slot
    }
    why = check_siblings(manifest.slot, release_set, siblings)
    if why is not None:
        raise VerificationError(Reason.RELEASE_MISMATCH, why, release=release_set.release)
