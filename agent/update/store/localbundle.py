"""``update install BUNDLE_DIR``: a bundle on local media, treated as files an attacker chose.

The manifest and roots are read bounded from regular files only (``stagefiles.read_regular``),
the manifest is verified, then every file it names is copied into a private directory of
the state dir (``<state_dir>/transfer/local-*``), hashed as it is copied; only that copy
is checked, staged and named in the journal. So the journal never points at the user's
directory: a recovery after a kill resumes from the copy, a FIFO or symlink on the stick
is a ``malformed`` rejection before anything is journalled, and a stick pulled out mid-way
cannot wedge later installs. The copy is removed when the install returns.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from agent.errors import DownloadError, Reason
from agent.log import get_logger
from agent.update.store.bundle import check_chunk_index, read_manifest, read_root_chain
from agent.update.store.installer import Installer
from agent.update.store.outcome import InstallResult, space_guard
from agent.update.store.stagefiles import copy_verified
from agent.update.trust.manifest import Manifest

log = get_logger(__name__)

TRANSFER_DIR = "transfer"
LOCAL_PREFIX = "local-"


def import_bundle(bundle_dir: Path, manifest: Manifest, dest: Path) -> Path:
    """Copy (and hash) the manifest's files and chunk index into ``dest``; its ``files`` dir."""
    files = dest / "files"
    files.mkdir(mode=0o700, parents=True)
    for entry in manifest.files:
        copy_verified(bundle_dir / entry.name, files / entry.name, entry)
    copy_verified(
        bundle_dir / manifest.chunk_index.name,
        dest / manifest.chunk_index.name,
        manifest.chunk_index,
    )
    check_chunk_index(dest, manifest)
    return files


def remove_stale_copies(installer: Installer) -> None:
    """Copies no journal names any more (an install killed after its recovery settled)."""
    root = installer.state_dir / TRANSFER_DIR
    try:
        entries = [p for p in root.iterdir() if p.name.startswith(LOCAL_PREFIX)]
    except OSError:
        return
    named = {installer.journal.load(slot).source_dir for slot in installer.journal.slots()}
    for entry in entries:
        if not any(n.startswith(str(entry)) for n in named if n):
            shutil.rmtree(entry, ignore_errors=True)


def install_from_dir(installer: Installer, bundle_dir: Path) -> InstallResult:
    """The whole ``update install`` sequence, with exactly the checks of an MQTT update."""
    installer.recover()
    remove_stale_copies(installer)
    installer.apply_roots(read_root_chain(bundle_dir, installer.trust.load_root().version))
    verified = installer.verify(read_manifest(bundle_dir))
    dest = installer.state_dir / TRANSFER_DIR / f"{LOCAL_PREFIX}{secrets.token_hex(8)}"
    try:
        with space_guard():
            files = import_bundle(bundle_dir.absolute(), verified.manifest, dest)
    except OSError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise DownloadError(Reason.LENGTH_MISMATCH, f"cannot copy the bundle: {exc}") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    try:
        return installer.install(verified, files)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
