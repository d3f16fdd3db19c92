"""The chunk table of a bundle: per file, the SHA-256 of every fixed-size chunk.

Built from the bundle's chunk index once that index has been checked against the
hash in the signed manifest, so every chunk hash here is as trusted as the manifest.
Global chunk numbers run over the files in manifest order (one bitmap per transfer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FileChunks:
    name: str
    length: int
    sha256: str
    chunks: tuple[bytes, ...]  # raw 32-byte digests


@dataclass(frozen=True, slots=True)
class ChunkTable:
    chunk_size: int
    files: tuple[FileChunks, ...]
    # Global number of each file's first chunk (looked up per arriving chunk).
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = []
        total = 0
        for entry in self.files:
            want = -(-entry.length // self.chunk_size)
            if len(entry.chunks) != want:
                raise ValueError(
                    f"{entry.name}: {entry.length} bytes need {want} chunks, index has "
                    f"{len(entry.chunks)}"
                )
            starts.append(total)
            total += want
        object.__setattr__(self, "_starts", tuple(starts))  # frozen: set once here

    @property
    def total_chunks(self) -> int:
        return sum(len(f.chunks) for f in self.files)

    @property
    def total_length(self) -> int:
        return sum(f.length for f in self.files)

    def first_global(self, file_no: int) -> int:
        return self._starts[file_no] if file_no < len(self._starts) else self.total_chunks

    def to_global(self, file_no: int, index: int) -> int:
        if not 0 <= file_no < len(self.files) or not 0 <= index < len(self.files[file_no].chunks):
            raise IndexError((file_no, index))
        return self.first_global(file_no) + index

    def to_local(self, global_index: int) -> tuple[int, int]:
        rest = global_index
        for file_no, entry in enumerate(self.files):
            if rest < len(entry.chunks):
                return file_no, rest
            rest -= len(entry.chunks)
        raise IndexError(global_index)

    def chunk_length(self, file_no: int, index: int) -> int:
        entry = self.files[file_no]
        return min(self.chunk_size, entry.length - index * self.chunk_size)

    def matches(self, file_no: int, index: int, payload: bytes | memoryview) -> bool:
        """The payload is exactly chunk ``index`` of file ``file_no`` (length and hash)."""
        try:
            want = self.files[file_no].chunks[index]
        except IndexError:
            return False
        if len(payload) != self.chunk_length(file_no, index):
            return False
        return hashlib.sha256(payload).digest() == want


def build_table(chunk_size: int, named: list[tuple[str, int, str, list[str]]]) -> ChunkTable:
    """From (name, length, sha256 hex, [chunk sha256 hex...]) tuples; ValueError when malformed."""
    files = []
    for name, length, sha, hexes in named:
        digests = tuple(bytes.fromhex(h) for h in hexes)
        if any(len(d) != 32 for d in digests):
            raise ValueError(f"{name}: chunk hashes must be SHA-256")
        files.append(FileChunks(name, length, sha, digests))
    return ChunkTable(chunk_size, tuple(files))


def table_from_bytes(chunk_size: int, files: list[tuple[str, int, str]], data: bytes) -> ChunkTable:
    """A table computed from whole file contents (operator side, tests, benchmarks)."""
    named = []
    offset = 0
    for name, length, sha in files:
        body = data[offset : offset + length]
        offset += length
        hexes = [
            hashlib.sha256(body[i : i + chunk_size]).hexdigest()
            for i in range(0, length, chunk_size)
        ]
        named.append((name, length, sha, hexes))
    return build_table(chunk_size, named)
