"""Bundle directory: ``manifest.json`` (signed envelope), files, ``chunk_index.json``, ``roots/``.

The chunk index splits every file into fixed-size chunks with a SHA-256 each, so
the MQTT delivery can verify every chunk before writing it; the index's own
length and hash are in the signed manifest (``transfer.chunk_index``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.errors import DownloadError, Reason, VerificationError
from agent.update.store.stagefiles import check_bytes, read_regular
from agent.update.trust.envelope import canonical_bytes, strict_loads
from agent.update.trust.manifest import Manifest
from agent.update.trust.root import MAX_ROOT_BYTES
from agent.update.trust.verify import MAX_ENVELOPE_BYTES

MANIFEST_FILE = "manifest.json"
CHUNK_INDEX_FILE = "chunk_index.json"
ROOTS_DIR = "roots"
_ROOT_NAME = re.compile(r"^(\d{1,6})\.root\.json$")


def file_chunks(path: Path, chunk_size: int) -> list[str]:
    hashes: list[str] = []
    with path.open("rb") as handle:
        while block := handle.read(chunk_size):
            hashes.append(hashlib.sha256(block).hexdigest())
    return hashes


def build_chunk_index(files: Mapping[str, Path], chunk_size: int) -> bytes:
    doc: dict[str, Any] = {"chunk_size": chunk_size, "files": {}}
    for name, path in files.items():
        data_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        doc["files"][name] = {
            "length": path.stat().st_size,
            "sha256": data_hash,
            "chunks": file_chunks(path, chunk_size),
        }
    return canonical_bytes(doc)


def _chunk_table(data: bytes, manifest: Manifest) -> dict[str, list[str]]:
    doc = strict_loads(data)
    if doc["chunk_size"] != manifest.chunk_size:
        raise ValueError("chunk_size differs from the manifest")
    out: dict[str, list[str]] = {}
    for entry in manifest.files:
        raw = doc["files"][entry.name]
        expected = -(-entry.length // manifest.chunk_size)
        if raw["length"] != entry.length or raw["sha256"] != entry.sha256:
            raise ValueError(f"{entry.name} differs from the manifest")
        if len(raw["chunks"]) != expected:
            raise ValueError(f"{entry.name} has {len(raw['chunks'])} chunks, want {expected}")
        out[entry.name] = [str(h) for h in raw["chunks"]]
    return out


def parse_chunk_index(data: bytes, manifest: Manifest) -> dict[str, list[str]]:
    """Chunk hashes per file; the index must agree with the manifest on every file."""
    try:
        return _chunk_table(data, manifest)
    except (ValueError, KeyError, TypeError) as exc:
        raise DownloadError(Reason.HASH_MISMATCH, f"chunk index does not match: {exc}") from exc


def _read_capped(path: Path, cap: int, what: str) -> bytes:
    """A regular file only (``read_regular``: no FIFO, device or symlink), at most ``cap``."""
    try:
        data = read_regular(path, cap)
    except DownloadError as exc:
        raise VerificationError(Reason.MALFORMED, f"{what} {path}: {exc.message}") from exc
    except OSError as exc:
        raise VerificationError(Reason.UNSIGNED, f"cannot read {what} {path}: {exc}") from exc
    if len(data) > cap:
        raise VerificationError(Reason.TOO_LARGE, f"{what} is larger than {cap} bytes")
    return data


def read_manifest(bundle_dir: Path) -> bytes:
    if not bundle_dir.is_dir():  # a typo in the path is not an unsigned bundle
        what = "is not a directory" if bundle_dir.exists() else "does not exist"
        raise VerificationError(
            Reason.MALFORMED, f"bundle directory {bundle_dir} {what}", path=str(bundle_dir)
        )
    return _read_capped(bundle_dir / MANIFEST_FILE, MAX_ENVELOPE_BYTES, "manifest")


def read_root_chain(bundle_dir: Path, trusted_version: int) -> list[bytes]:
    """Roots newer than ``trusted_version`` shipped in ``roots/N.root.json``, in order."""
    roots_dir = bundle_dir / ROOTS_DIR
    if roots_dir.is_symlink() or not roots_dir.is_dir():
        return []
    found: dict[int, Path] = {}
    for path in roots_dir.iterdir():
        match = _ROOT_NAME.match(path.name)
        if match is not None and int(match.group(1)) > trusted_version:
            found[int(match.group(1))] = path
    return [_read_capped(found[v], MAX_ROOT_BYTES, "root") for v in sorted(found)]


def check_chunk_index(bundle_dir: Path, manifest: Manifest) -> dict[str, list[str]]:
    path = bundle_dir / manifest.chunk_index.name
    try:
        data = read_regular(path, manifest.chunk_index.length)
    except OSError as exc:
        raise DownloadError(
            Reason.LENGTH_MISMATCH, f"{path.name}: cannot read: {exc}", file=path.name
        ) from exc
    check_bytes(data, manifest.chunk_index)  # the bytes parsed are the bytes hashed
    return parse_chunk_index(data, manifest)
