"""Model store pointers, pruning, GC, read-only dirs; journal persistence and loop breaker."""

from __future__ import annotations

import hashlib

import pytest

from agent.update.store.journal import Journal, LoopBreakError, Phase, SlotJournal, read_status
from agent.update.store.models import ModelStore, is_readonly
from agent.update.trust.manifest import FileEntry


def stage(store, tmp_path, content, slot="detector"):
    src = tmp_path / f"src-{content}"
    src.mkdir()
    (src / "m.tflite").write_text(content)
    entry = FileEntry("m.tflite", len(content), hashlib.sha256(content.encode()).hexdigest())
    sha = hashlib.sha256(content.encode() + b"manifest").hexdigest()
    info = {"model_file": "m.tflite", "manifest_version": 1, "release": 1}
    store.stage(slot, sha, [entry], src, info=info, manifest_bytes=b"{}")
    return sha


def test_activate_restore_swap_prune_gc(tmp_path):
    state = tmp_path / "state"
    store = ModelStore(state)
    a = stage(store, tmp_path, "alpha")
    b = stage(store, tmp_path, "bravo")
    c = stage(store, tmp_path, "charlie")
    assert store.current_model("detector") is None
    store.activate("detector", a, None)
    store.activate("detector", b, a)
    assert (store.current_sha("detector"), store.previous_sha("detector")) == (b, a)
    assert store.current_model("detector").read_text() == "bravo"
    assert is_readonly(store.version_dir("detector", b))
    assert is_readonly(store.current_model("detector"))
    slot_dir = store.slot_dir("detector")
    (slot_dir / f".v-{'0' * 64}.tmp").mkdir()
    (slot_dir / "current.tmp-link").symlink_to(f".v-{c}")
    (slot_dir / "stray").write_text("x")
    assert sorted(store.prune()) == [
        "detector/.v-" + "0" * 64 + ".tmp",
        "detector/current.tmp-link",
        "detector/stray",
    ]
    assert store.gc("detector") == [c]
    assert store.swap("detector") == a
    store.restore("detector", None)
    assert store.current_model("detector") is None


def test_journal_roundtrip_loop_breaker_and_status(tmp_path):
    journal = Journal(tmp_path, max_transitions=4)
    entry = journal.save(SlotJournal(slot="detector"), Phase.VERIFIED, manifest_version=3)
    entry = journal.save(entry, Phase.STAGED)
    assert journal.load("detector") == entry
    entry = journal.save(entry, Phase.ACTIVATING)
    entry = journal.save(entry, Phase.TRIAL, attempts=1)
    with pytest.raises(LoopBreakError):
        journal.save(entry, Phase.TRIAL)
    status = read_status(tmp_path)
    assert status["slots"]["detector"]["phase"] == "trial"
    assert status["slots"]["detector"]["active"] is None
    assert status["trust"]["root_version"] is None
    journal.path("detector").write_text("{torn")
    assert journal.load("detector").last_result == {"outcome": "failed", "reason": "interrupted"}
