"""The event ``seq`` on a full disk: events keep their numbers, a crash never repeats one.

Runs on a real 16 MB tmpfs filled to the last byte when this process may mount one;
otherwise the copy-and-rename write is made to fail with ENOSPC (the seam), and the
in-place overwrite still runs on the real file.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from agent.errors import StorageError
from agent.events import seq as seq_module
from agent.events.seq import RECORD_BYTES, SEQ_FILE, SeqAllocator
from tests.fault.conftest import SmallFs, figure


def _no_space(path: Path, data: bytes, mode: int = 0o644) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_seq_keeps_counting_across_blocks_on_a_full_disk_and_never_repeats(
    small_fs: SmallFs, monkeypatch: pytest.MonkeyPatch, log_events: list[dict[str, object]]
) -> None:
    state = small_fs.path
    allocator = SeqAllocator(state, block=10)
    before = [allocator.next() for _ in range(3)]
    small_fs.fill()
    if not small_fs.real:
        monkeypatch.setattr(seq_module, "atomic_write_bytes", _no_space)
    # Ten blocks' worth while the disk is full: every block boundary needs a new record.
    during = [allocator.next() for _ in range(100)]
    used = before + during
    assert used == list(range(1, 104))
    assert (state / SEQ_FILE).stat().st_size == RECORD_BYTES
    assert any(e["event"] == "seq_reserved_in_place" for e in log_events)
    # A crash now: the next run starts above every number handed out.
    after_crash = SeqAllocator(state, block=10).next()
    assert after_crash > max(used)
    small_fs.release()
    monkeypatch.undo()
    recovered = SeqAllocator(state, block=10)
    assert recovered.next() > after_crash
    saved = json.loads((state / SEQ_FILE).read_text(encoding="utf-8"))
    assert saved["reserved_until"] > after_crash
    figure("seq_full_disk", mode="tmpfs ENOSPC" if small_fs.real else "seam", events=len(used))


def test_seq_raises_only_when_the_reserved_numbers_run_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_events: list[dict[str, object]]
) -> None:
    allocator = SeqAllocator(tmp_path, block=10)
    monkeypatch.setattr(seq_module, "atomic_write_bytes", _no_space)
    (tmp_path / SEQ_FILE).unlink()  # nothing to overwrite in place either
    handed = [allocator.next() for _ in range(10)]
    with pytest.raises(StorageError):
        allocator.next()
    assert handed == list(range(1, 11))  # every number of the persisted block, no more
    assert any(e["event"] == "seq_reserve_failed" for e in log_events)
