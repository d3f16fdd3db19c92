"""A bundle directory as the chunk server sees it: manifest bytes, files, chunk index."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import AgentError, DownloadError
from agent.update.store.bundle import parse_chunk_index, read_manifest
from agent.update.transfer.wire import chunk_frame_buffer
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import Manifest, parse_manifest
from agent.update.trust.verify import MAX_ENVELOPE_BYTES


@dataclass(frozen=True, slots=True)
class ServedBundle:
    directory: Path
    envelope_bytes: bytes
    manifest: Manifest
    index_bytes: bytes
    # Per file, the raw SHA-256 of every chunk as the chunk index lists them (empty when the
    # index could not be read against the manifest): frame headers reuse them, no re-hash.
    digests: tuple[tuple[bytes, ...], ...] = ()
    # Open read-only descriptors per file, opened on first use (one open per bundle).
    _fds: dict[int, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def deployment_id(self) -> str:
        return self.manifest.deployment_id

    @property
    def chunk_size(self) -> int:
        return self.manifest.chunk_size

    def index_piece(self, piece: int) -> bytes | None:
        size = self.chunk_size
        if piece < 0 or piece * size >= max(1, len(self.index_bytes)):
            return None
        return self.index_bytes[piece * size : (piece + 1) * size]

    def chunk(self, file_no: int, index: int) -> bytes | None:
        """Chunk ``index`` of file ``file_no``, or None when out of range."""
        if not 0 <= file_no < len(self.manifest.files):
            return None
        entry = self.manifest.files[file_no]
        offset = index * self.chunk_size
        if index < 0 or offset >= entry.length:
            return None
        return os.pread(self._fd(file_no), min(self.chunk_size, entry.length - offset), offset)

    def chunk_frame(self, file_no: int, index: int) -> bytearray | None:
        """Chunk ``index`` of file ``file_no`` as a whole chunk frame, read straight into it.

        None when out of range, or when the chunk index gave no digests (then the caller
        builds the frame from ``chunk`` and hashes it).
        """
        digest = self.chunk_digest(file_no, index)
        if digest is None or not 0 <= file_no < len(self.manifest.files):
            return None
        entry = self.manifest.files[file_no]
        offset = index * self.chunk_size
        length = min(self.chunk_size, entry.length - offset)
        if index < 0 or length <= 0:
            return None
        frame, payload = chunk_frame_buffer(file_no, index, length, digest)
        if os.preadv(self._fd(file_no), [payload], offset) != length:
            return None  # the file shrank under us: the request is answered by a resend later
        return frame

    def _fd(self, file_no: int) -> int:
        fd = self._fds.get(file_no)
        if fd is None:
            name = self.manifest.files[file_no].name
            fd = self._fds.setdefault(file_no, os.open(self.directory / name, os.O_RDONLY))
        return fd

    def chunk_digest(self, file_no: int, index: int) -> bytes | None:
        """The chunk's SHA-256 from the chunk index, or None when the index does not have it."""
        if file_no < 0 or index < 0:
            return None
        try:
            return self.digests[file_no][index]
        except IndexError:
            return None

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def load_bundle(directory: Path) -> ServedBundle:
    """Read a bundle made by ``edge-fleet bundle create`` (the signature is the device's job)."""
    envelope_bytes = read_manifest(directory)
    envelope = parse_envelope(envelope_bytes, MAX_ENVELOPE_BYTES, "manifest")
    manifest = parse_manifest(envelope.payload)
    index_path = directory / manifest.chunk_index.name
    try:
        index_bytes = index_path.read_bytes()
        for entry in manifest.files:
            if (directory / entry.name).stat().st_size != entry.length:
                raise AgentError(f"{entry.name} in {directory} does not match its manifest entry")
    except OSError as exc:
        raise AgentError(f"bundle {directory} is incomplete: {exc}") from exc
    try:
        chunks = parse_chunk_index(index_bytes, manifest)
        digests = tuple(tuple(bytes.fromhex(h) for h in chunks[f.name]) for f in manifest.files)
    except (DownloadError, ValueError):
        digests = ()  # served as it is; devices check chunks against the signed index anyway
    return ServedBundle(directory, envelope_bytes, manifest, index_bytes, digests)
