"""One disk budget for transfers: checked before the first chunk, freed on every end.

A signed bundle larger than the free space used to fill the state disk to 0 bytes and
leave its partial file behind for ever. Before a transfer asks for anything:

* partial transfers of other bundles are removed (only one transfer runs at a time; a
  leftover is an interrupted or superseded one whose bytes no one will use);
* what is still missing of this bundle (signed total plus chunk index, less what its
  own partial files already hold) plus the store's margin must fit in the free space,
  else ``insufficient_space`` before a byte is fetched. Staging hard-links the part files
  into the store (same filesystem), so a bundle costs its size once; the previous version
  is already on disk and is removed only after the commit.

``translate_os_error`` turns ENOSPC/EDQUOT met mid-transfer into the same reason.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from agent.errors import DownloadError, Reason
from agent.log import get_logger
from agent.update.trust.manifest import Manifest

log = get_logger(__name__)

FreeBytes = Callable[[Path], int]
MARGIN_BYTES = 1 << 20  # the model store's own staging margin
_TRANSFER_DIR = re.compile(r"^[0-9a-f]{64}$")  # named by the chunk index's SHA-256


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def allocated_bytes(directory: Path) -> int:
    """Bytes the files under ``directory`` occupy on disk (part files are sparse)."""
    total = 0
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += (Path(dirpath) / name).lstat().st_blocks * 512
            except OSError:
                continue
    return total


def remove_partials(transfer_root: Path, keep: Path | None = None) -> list[str]:
    """Remove every transfer directory under ``transfer_root`` except ``keep``."""
    removed: list[str] = []
    try:
        entries = list(transfer_root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if entry == keep or not _TRANSFER_DIR.match(entry.name) or entry.is_symlink():
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.info("transfer_partials_removed", count=len(removed))
    return removed


def reserve(
    transfer_root: Path,
    manifest: Manifest,
    free_bytes: FreeBytes = disk_free_bytes,
    margin_bytes: int = MARGIN_BYTES,
) -> None:
    """Raise ``DownloadError(insufficient_space)`` unless this bundle's transfer fits."""
    directory = transfer_root / manifest.chunk_index.sha256
    remove_partials(transfer_root, keep=directory)
    have = allocated_bytes(directory) if directory.is_dir() else 0
    total = manifest.total_length + manifest.chunk_index.length
    need = max(0, total - have) + margin_bytes
    try:
        transfer_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        free = free_bytes(transfer_root)
    except OSError as exc:
        raise translate_os_error(exc, "transfer directory") from exc
    if free < need:
        raise DownloadError(
            Reason.INSUFFICIENT_SPACE,
            f"{need} bytes needed for the transfer ({total} signed, {have} already here), "
            f"{free} free",
            need=need,
            free=free,
        )


def translate_os_error(exc: OSError, what: str) -> DownloadError:
    """A disk error met while writing a transfer, as the reason the op ends with."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(Reason.INSUFFICIENT_SPACE, f"{what}: {exc.strerror}")
    return DownloadError(Reason.INTERRUPTED, f"{what}: {exc}")
