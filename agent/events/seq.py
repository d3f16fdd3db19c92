"""Per-device monotonic event ``seq`` that survives restarts and crashes.

Blocks of numbers are reserved ahead in a small JSON file written atomically; a seq
is only handed out below the persisted reservation, so after any crash the next run
starts above every seq ever used (gaps are allowed, repeats never).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from agent.errors import StorageError
from agent.fsutil import atomic_write_json
from agent.log import get_logger

log = get_logger(__name__)

SEQ_FILE = "event_seq.json"
BLOCK = 1000


class SeqAllocator:
    def __init__(self, state_dir: Path, block: int = BLOCK) -> None:
        self._path = state_dir / SEQ_FILE
        self._block = block
        self._lock = threading.Lock()
        self._next = self._load()
        self._reserved = self._next
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
        target = self._reserved + self._block
        try:
            atomic_write_json(self._path, {"reserved_until": target})
        except OSError as exc:
            raise StorageError(f"cannot persist event seq: {exc}", path=str(self._path)) from exc
        self._reserved = target

    def next(self) -> int:
        with self._lock:
            if self._next >= self._reserved:
                self._reserve()
            value = self._next
            self._next += 1
            return value

    @property
    def path(self) -> Path:
        return self._path
