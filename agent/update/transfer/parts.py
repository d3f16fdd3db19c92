"""Part files of a transfer: verified chunks written at their offsets, a persisted bitmap.

Layout under the transfer directory (mode 0700): ``files/<name>`` per bundle file,
pre-sized to its signed length (the directory the installer stages from), and
``bitmap``. A chunk is written only after its length and SHA-256 match the chunk
table; a chunk already present is a no-op, so QoS 1 redeliveries and the shared
stream's extra copies cost nothing but a lookup.

Each chunk is hashed once, on arrival, against the chunk index whose hash is in the
signed manifest, so a complete file is authenticated chunk by chunk; ``finish`` checks
that every chunk is present and every length is the signed one. The whole-file SHA-256
is not computed here: the model store re-hashes every file right before activation
(``ModelStore.verify_version``), which catches an index that disagrees with the file
hash, and a second whole-file pass on the transfer would only repeat it (on a board
without SHA instructions, a third of the update's hashing time). Data is not fsync'd
per chunk: part files and the bitmap are synced together every ``persist_every`` chunks
(data first, so the bitmap may lag the data, never lead it).
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
from pathlib import Path

from agent.errors import DownloadError, Reason
from agent.log import get_logger
from agent.update.transfer.bitmap import ChunkBitmap, load_bitmap, save_bitmap
from agent.update.transfer.table import ChunkTable

log = get_logger(__name__)


class WriteResult(str, enum.Enum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"  # out of range, wrong length or wrong hash: dropped and counted


class PartFiles:
    def __init__(self, directory: Path, table: ChunkTable, persist_every: int = 16) -> None:
        self.directory = directory
        self.table = table
        self.persist_every = max(1, persist_every)
        self._fds: list[int] = []
        self._dirty = 0
        self.bitmap = ChunkBitmap(table.total_chunks)
        self.rejected = 0
        self.duplicates = 0
        self.recovered = 0

    def path(self, file_no: int) -> Path:
        return self.directory / "files" / self.table.files[file_no].name

    @property
    def bitmap_path(self) -> Path:
        return self.directory / "bitmap"

    def open(self) -> None:
        """Create or reopen the part files; on resume, trust the bitmap and re-verify the gaps."""
        (self.directory / "files").mkdir(mode=0o700, parents=True, exist_ok=True)
        # Part files from an earlier run: chunks may be on disk without a saved bit yet.
        resuming = self.bitmap_path.exists() or any(
            self.path(n).exists() for n in range(len(self.table.files))
        )
        handed_over = []
        for file_no, entry in enumerate(self.table.files):
            fd = self._open_own(file_no)
            if fd < 0:  # the store links this inode: never write to it, start the file over
                handed_over.append(file_no)
                fd = self._open_own(file_no)
            self._fds.append(fd)
            if os.fstat(fd).st_size != entry.length:
                os.ftruncate(fd, entry.length)
        self.bitmap = load_bitmap(self.bitmap_path, self.table.total_chunks)
        for file_no in handed_over:
            start = self.table.first_global(file_no)
            for index in range(len(self.table.files[file_no].chunks)):
                self.bitmap.discard(start + index)
        if resuming:
            self._recover_gaps()

    def _open_own(self, file_no: int) -> int:
        """Open part file ``file_no`` for writing; -1 (after unlinking it) when it has other names.

        A finished part file is hard-linked into the model store (``ModelStore.stage``);
        the transfer must not write to that inode again, so a second name means it is no
        longer the transfer's.
        """
        path = self.path(file_no)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        if os.fstat(fd).st_nlink > 1:
            os.close(fd)
            path.unlink()
            return -1
        return fd

    def _recover_gaps(self) -> None:
        # Chunks written after the last bitmap save survive a process kill in the page cache;
        # reading them back and checking their hash is as strong as fetching them again.
        for global_index in self.bitmap.missing():
            file_no, index = self.table.to_local(global_index)
            offset = index * self.table.chunk_size
            data = os.pread(self._fds[file_no], self.table.chunk_length(file_no, index), offset)
            if self.table.matches(file_no, index, data):
                self.bitmap.add(global_index)
                self.recovered += 1
        if self.recovered:
            log.info("transfer_chunks_recovered", count=self.recovered, dir=str(self.directory))
            self.flush()

    def write(self, file_no: int, index: int, payload: bytes | memoryview) -> WriteResult:
        try:
            global_index = self.table.to_global(file_no, index)
        except IndexError:
            self.rejected += 1
            return WriteResult.REJECTED
        if global_index in self.bitmap:
            self.duplicates += 1
            return WriteResult.DUPLICATE
        if not self.table.matches(file_no, index, payload):
            self.rejected += 1
            return WriteResult.REJECTED
        os.pwrite(self._fds[file_no], payload, index * self.table.chunk_size)
        self.bitmap.add(global_index)
        self._dirty += 1
        if self._dirty >= self.persist_every:
            self.flush()
        return WriteResult.WRITTEN

    def flush(self) -> None:
        """Data before bitmap: a bit on disk always means the bytes are on disk too."""
        for fd in self._fds:
            os.fsync(fd)
        save_bitmap(self.bitmap_path, self.bitmap)
        self._dirty = 0

    def finish(self) -> list[Path]:
        """Every chunk present (each verified on arrival) and every length the signed one."""
        self.flush()
        paths = []
        for file_no, entry in enumerate(self.table.files):
            start = self.table.first_global(file_no)
            present = sum(start + i in self.bitmap for i in range(len(entry.chunks)))
            size = os.fstat(self._fds[file_no]).st_size
            if present != len(entry.chunks) or size != entry.length:
                raise DownloadError(
                    Reason.LENGTH_MISMATCH,
                    f"{entry.name}: {present} of {len(entry.chunks)} chunks, "
                    f"{size} of {entry.length} bytes",
                )
            paths.append(self.path(file_no))
        return paths

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
