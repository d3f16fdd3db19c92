"""Files into a staging dir: copied and hashed, or a verified transfer part hard-linked.

Used by ``ModelStore.stage``; ``check_file`` is also the bundle-dir check of ``update install``.
Bundle files may be whatever an attacker put on a USB stick: every one is opened with
``O_NOFOLLOW | O_NONBLOCK`` and used only when ``fstat`` says it is a regular file
(``open_regular``), so a FIFO, a device node or a symlink is a clear ``malformed``
rejection instead of a read that never returns or an uncaught ``ELOOP``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from agent.errors import DownloadError, Reason
from agent.update.trust.manifest import FileEntry

READ_BLOCK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
}


def not_regular(path: Path, kind: str) -> DownloadError:
    return DownloadError(
        Reason.MALFORMED, f"{path.name}: {kind}, not a regular file", file=path.name, kind=kind
    )


def open_regular(path: Path) -> int:
    """A read-only fd of ``path`` when it is a regular file (not a link to one); never blocks.

    Raises ``DownloadError(malformed)`` for anything else; other ``OSError``s pass through.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise not_regular(path, "a symbolic link") from exc
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise not_regular(path, _KINDS.get(stat.S_IFMT(mode), "not a file"))
    return fd


def read_regular(path: Path, cap: int) -> bytes:
    """At most ``cap + 1`` bytes of a regular file (the caller rejects a longer one)."""
    fd = open_regular(path)
    try:
        chunks: list[bytes] = []
        total = 0
        while total <= cap:
            block = os.read(fd, min(READ_BLOCK, cap + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


def hash_file(path: Path, limit: int) -> tuple[int, str]:
    """(length, sha256) reading at most ``limit + 1`` bytes so an endless file stops early."""
    digest = hashlib.sha256()
    total = 0
    # One reused buffer: a fresh 1 MiB object per read costs page faults on every block.
    view = memoryview(bytearray(READ_BLOCK))
    fd = open_regular(path)
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


def check_bytes(data: bytes, entry: FileEntry) -> None:
    """``check_file`` for bytes already read (once: no second open of the same name)."""
    if len(data) != entry.length:
        raise DownloadError(
            Reason.LENGTH_MISMATCH,
            f"{entry.name}: {len(data)} bytes, manifest says {entry.length}",
            file=entry.name,
        )
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise DownloadError(Reason.HASH_MISMATCH, f"{entry.name}: sha256 mismatch", file=entry.name)


def copy_verified(src: Path, dst: Path, entry: FileEntry) -> None:
    """Copy at most length+1 bytes, hashing the bytes we write (not a re-read of the source)."""
    digest = hashlib.sha256()
    total = 0
    try:
        in_fd = open_regular(src)
    except OSError as exc:
        raise DownloadError(
            Reason.LENGTH_MISMATCH, f"{entry.name}: cannot read: {exc}", file=entry.name
        ) from exc
    try:
        out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:
        os.close(in_fd)
        raise
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
        fd = os.open(src, _OPEN_FLAGS)
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


def usable_source(source_dir: str) -> bool:
    """A journalled source to resume staging from: an absolute path to a real directory.

    Anything else (relative, a symlink, gone, unreadable) ends the deployment
    ``failed``/``interrupted`` instead of being opened again at every start.
    """
    path = Path(source_dir)
    if not source_dir or not path.is_absolute():
        return False
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode) and os.access(path, os.R_OK | os.X_OK)
    except OSError:
        return False
