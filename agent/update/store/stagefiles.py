"""Files into a staging dir: copied and hashed, or a verified transfer part hard-linked.

Used by ``ModelStore.stage``; ``check_file`` is also the bundle-dir check of ``update install``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from agent.errors import DownloadError, Reason
from agent.update.trust.manifest import FileEntry

READ_BLOCK = 1 << 20


def hash_file(path: Path, limit: int) -> tuple[int, str]:
    """(length, sha256) reading at most ``limit + 1`` bytes so an endless file stops early."""
    digest = hashlib.sha256()
    total = 0
    # One reused buffer: a fresh 1 MiB object per read costs page faults on every block.
    view = memoryview(bytearray(READ_BLOCK))
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while total <= limit:
            got = os.readv(fd, [view[: min(READ_BLOCK, limit + 1 - total)]])
            if not got:
                break
            digest.update(view[:got])
            total += got
    finally:
        os.close(fd)
    return total, digest.hexdigest()


def check_file(path: Path, entry: FileEntry) -> None:
    """Raise ``DownloadError`` unless ``path`` has exactly the signed length and hash."""
    try:
        length, digest = hash_file(path, entry.length)
    except OSError as exc:
        raise DownloadError(
            Reason.LENGTH_MISMATCH, f"{entry.name}: cannot read: {exc}", file=entry.name
        ) from exc
    if length != entry.length:
        raise DownloadError(
            Reason.LENGTH_MISMATCH,
            f"{entry.name}: {length} bytes, manifest says {entry.length}",
            file=entry.name,
        )
    if digest != entry.sha256:
        raise DownloadError(Reason.HASH_MISMATCH, f"{entry.name}: sha256 mismatch", file=entry.name)


def copy_verified(src: Path, dst: Path, entry: FileEntry) -> None:
    """Copy at most length+1 bytes, hashing the bytes we write (not a re-read of the source)."""
    digest = hashlib.sha256()
    total = 0
    in_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(in_fd, "rb") as reader, os.fdopen(out_fd, "wb") as writer:
        while total <= entry.length:
            block = reader.read(min(READ_BLOCK, entry.length + 1 - total))
            if not block:
                break
            digest.update(block)
            writer.write(block)
            total += len(block)
        writer.flush()
        os.fsync(writer.fileno())
    if total != entry.length:
        raise DownloadError(
            Reason.LENGTH_MISMATCH,
            f"{entry.name}: {'more than ' if total > entry.length else ''}{total} bytes, "
            f"manifest says {entry.length}",
            file=entry.name,
        )
    if digest.hexdigest() != entry.sha256:
        raise DownloadError(Reason.HASH_MISMATCH, f"{entry.name}: sha256 mismatch", file=entry.name)


def link_verified_part(src: Path, dst: Path, entry: FileEntry) -> bool:
    """Hard-link a transfer's finished part file as ``dst``; False when it must be copied.

    Only a regular file of ours with exactly one name and the signed length is linked
    (a second name would be a second writer). The transfer never writes to a part file
    with more than one link, so the store's inode is only ever written by the transfer
    before it verified every chunk; the whole file is hashed before activation.
    """
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        before = os.fstat(fd)
        if (
            not stat.S_ISREG(before.st_mode)
            or before.st_uid != os.getuid()
            or before.st_nlink != 1
            or before.st_size != entry.length
        ):
            return False
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:  # another filesystem (EXDEV), links not allowed: copy instead
            return False
        linked = os.lstat(dst)
        if (linked.st_dev, linked.st_ino) != (before.st_dev, before.st_ino):
            dst.unlink()  # the source name was swapped between open and link
            return False
        os.fsync(fd)  # the transfer synced the data; this covers the inode as well
    finally:
        os.close(fd)
    return True
