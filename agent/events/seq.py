"""Per-device monotonic event ``seq`` that survives restarts and crashes.

Blocks of numbers are reserved ahead in a small file; a seq is only handed out below
the persisted reservation, so after any crash the next run starts above every seq ever
used (gaps are allowed, repeats never).

A full disk must not stop events, so the next block is reserved while half of the
current one is left, and the record has a fixed width: when the usual write-a-copy-
and-rename finds no space, the record is overwritten in place in blocks the file
already owns (one sector, fsynced). Only when both fail and the block runs out does
``next`` raise.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from agent.errors import StorageError
from agent.fsutil import atomic_write_bytes
from agent.log import get_logger

log = get_logger(__name__)

SEQ_FILE = "event_seq.json"
BLOCK = 1000
RECORD_BYTES = 64  # far below a sector: an in-place overwrite is never torn
RETRY_FRACTION = 20  # after a failed reservation, try again every block/20 events


def encode_record(reserved_until: int) -> bytes:
    """The fixed-width record: JSON padded with spaces, so every version has one size."""
    text = json.dumps({"reserved_until": reserved_until})
    return (text.ljust(RECORD_BYTES - 1) + "\n").encode("ascii")


class SeqAllocator:
    def __init__(self, state_dir: Path, block: int = BLOCK) -> None:
        self._path = state_dir / SEQ_FILE
        self._block = block
        self._lock = threading.Lock()
        self._next = self._load()
        self._reserved = self._next
        self._retry_at = 0
        self._reserve()

    def _load(self) -> int:
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            value = int(raw["reserved_until"])
        except FileNotFoundError:
            return 1
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # The floor is lost: restart above any plausible earlier seq (wall time in ms).
            floor = int(time.time() * 1000)
            log.error(  # noqa: TRY400 - a known condition; the traceback adds nothing
                "seq_state_corrupt", path=str(self._path), error=str(exc), restart_at=floor
            )
            return floor
        return max(1, value)

    def _reserve(self) -> None:
        """Persist a reservation one block above the current one (raises StorageError)."""
        target = self._reserved + self._block
        record = encode_record(target)
        try:
            atomic_write_bytes(self._path, record)
        except OSError as exc:
            try:
                self._overwrite_in_place(record)
            except OSError as in_place_exc:
                raise StorageError(
                    f"cannot persist event seq: {exc}; in place: {in_place_exc}",
                    path=str(self._path),
                ) from in_place_exc
            log.warning("seq_reserved_in_place", path=str(self._path), error=str(exc))
        self._reserved = target

    def _overwrite_in_place(self, record: bytes) -> None:
        fd = os.open(self._path, os.O_WRONLY)  # never O_CREAT: a new file needs space
        try:
            if os.fstat(fd).st_size > len(record):
                os.ftruncate(fd, len(record))  # shrinking frees space, never needs it
            os.pwrite(fd, record, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def next(self) -> int:
        with self._lock:
            if self._next >= self._reserved - self._block // 2 and self._next >= self._retry_at:
                try:
                    self._reserve()
                except StorageError as exc:
                    if self._next >= self._reserved:
                        raise  # no number left that a crash could not repeat
                    self._retry_at = self._next + max(1, self._block // RETRY_FRACTION)
                    log.warning(
                        "seq_reserve_failed", left=self._reserved - self._next, error=str(exc)
                    )
            value = self._next
            self._next += 1
            return value

    @property
    def path(self) -> Path:
        return self._path
