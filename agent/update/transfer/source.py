"""What the update service needs from a download source other than the MQTT chunk stream.

Every source writes into the same transfer directory (``<state_dir>/transfer/<chunk
index sha256>/``) through ``TransferSession`` and ``PartFiles``: the same verified
index, the same per-chunk checks against it, the same persisted bitmap. So a transfer
begun over one source resumes over another, and every source ends in the same
whole-file checks (``TransferSession.finish``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from agent.update.store.bundle import parse_chunk_index
from agent.update.transfer.session import Progress
from agent.update.transfer.table import ChunkTable, build_table
from agent.update.trust.manifest import Manifest

# Called between steps: False to stop (the bitmap resumes it), or raises to abandon.
KeepGoing = Callable[[], bool]
OnProgress = Callable[[Progress], None]


class BundleFetcher(Protocol):
    def fetch(
        self,
        manifest: Manifest,
        directory: Path,
        deadline_s: float,
        keep_going: KeepGoing,
        on_progress: OnProgress,
    ) -> Path | None:
        """The verified files directory, or None when ``keep_going`` said stop.

        Raises ``DownloadError`` (``slow_transfer`` once ``deadline_s`` has passed) or
        ``SourceError`` with ``transient=False`` when the source refuses for good.
        """
        ...


def chunk_table(manifest: Manifest, data: bytes) -> ChunkTable:
    """The chunk table of a bundle from its (already hash-checked) chunk index bytes."""
    chunks = parse_chunk_index(data, manifest)
    return build_table(
        manifest.chunk_size,
        [(f.name, f.length, f.sha256, chunks[f.name]) for f in manifest.files],
    )
