"""``edge-agent update install`` from media an attacker prepared (issue 18, item 5).

Real files: a FIFO or a symlink put in place of ``manifest.json``, ``chunk_index.json``,
a root file or the model. Before: a FIFO hung the install for ever with the journal at
``verified`` pointing at the stick (every later install hung or failed); a symlinked model
raised an uncaught ELOOP with the same wedge. Now: a prompt ``malformed`` rejection that
names the file, nothing journalled against the stick, and the next install works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.update.store.bundle import CHUNK_INDEX_FILE, MANIFEST_FILE
from agent.update.store.journal import Journal, Phase
from tests.support.update_fleet import Fleet

PROMPT_S = 15.0  # a hang is what failed before: the subprocess is killed after this


def install(bundle: Path, cfg: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "update", "install", str(bundle), "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROMPT_S,
        check=False,
    )
    return proc, time.monotonic() - started


@pytest.fixture
def setup(tmp_path: Path, short_range_model: Path) -> tuple[Fleet, Path, Path]:
    fleet = Fleet(tmp_path / "fleet", short_range_model)
    state = tmp_path / "state"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [device]
        id = "cam-001"
        fleet = "default"
        [storage]
        state_dir = "{state}"
        [control]
        socket_path = "{tmp_path / "run" / "control.sock"}"
        [trust]
        root = "{fleet.root_path}"
        [[models]]
        slot = "detector"
        path = "{short_range_model}"
        """)
    )
    return fleet, state, cfg


def replace_with(path: Path, kind: str, elsewhere: Path) -> None:
    """Put a FIFO, or a symlink to a copy of the original, where ``path`` was."""
    if path.exists():
        shutil.copyfile(path, elsewhere)
        path.unlink()
    else:
        elsewhere.write_bytes(b"{}")
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(elsewhere)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
@pytest.mark.parametrize("target", ["manifest", "chunk_index", "root", "model"])
def test_fifo_or_symlink_in_a_bundle_is_refused_promptly_and_the_next_install_works(
    setup: tuple[Fleet, Path, Path], tmp_path: Path, kind: str, target: str
) -> None:
    fleet, state, cfg = setup
    bad = fleet.bundle(manifest_version=1)
    model = str(fleet.payload(bad)["model"]["file"])
    names = {
        "manifest": MANIFEST_FILE,
        "chunk_index": CHUNK_INDEX_FILE,
        "root": "roots/2.root.json",  # newer than the trusted root: read during the walk
        "model": model,
    }
    victim = bad / names[target]
    victim.parent.mkdir(exist_ok=True)
    replace_with(victim, kind, tmp_path / f"elsewhere-{target}")

    proc, took = install(bad, cfg)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert took < PROMPT_S
    assert "not a regular file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert Path(names[target]).name in proc.stderr
    entry = Journal(state).load("detector")
    assert entry.phase.value == "idle"  # nothing left half-done
    assert str(bad) not in entry.source_dir

    good = fleet.bundle(manifest_version=2)
    proc, _ = install(good, cfg)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "committed" in proc.stdout
    entry = Journal(state).load("detector")
    assert entry.phase.value == "committed"
    assert entry.source_dir.startswith(str(state))  # the copy, never the stick
    assert not list((state / "transfer").glob("local-*"))  # the copy is gone too


def test_a_journal_naming_an_unusable_source_ends_interrupted_and_frees_the_slot(
    setup: tuple[Fleet, Path, Path],
) -> None:
    # A journal left by an older version (or edited): source is a symlink to the stick.
    fleet, state, cfg = setup
    first = fleet.bundle(manifest_version=1)
    proc, _ = install(first, cfg)
    assert proc.returncode == 0, proc.stderr
    journal = Journal(state)
    entry = journal.load("detector")
    pending = fleet.bundle(manifest_version=2)
    link = state / "stick-link"
    link.symlink_to(pending)
    journal.save_pending("detector", (pending / MANIFEST_FILE).read_bytes())
    doc = entry.to_json() | {"phase": Phase.VERIFIED.value, "source_dir": str(link)}
    journal.path("detector").write_text(json.dumps(doc), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT")}
    recovered = subprocess.run(
        [sys.executable, "-m", "agent", "update", "recover", "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROMPT_S,
        check=False,
    )
    assert recovered.returncode == 0, recovered.stderr
    entry = journal.load("detector")
    assert entry.phase.value == "idle"
    assert entry.last_result == {"outcome": "failed", "reason": "interrupted"}
    proc, _ = install(fleet.bundle(manifest_version=3), cfg)
    assert proc.returncode == 0, proc.stderr
