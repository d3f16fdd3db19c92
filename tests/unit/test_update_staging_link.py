"""Staging links a finished transfer's part file instead of copying it, without losing a check.

Real Ed25519 bundles, real files: a transfer-owned, verified part file becomes the
version file (same inode, no copy); anything else is copied and hashed as before;
either way wrong bytes are caught before activation and never reach the active model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from agent.errors import Reason, UpdateError
from agent.update.store.bundle import check_chunk_index, read_manifest
from agent.update.store.models import TRANSFER_DIR, ModelStore
from agent.update.transfer.parts import PartFiles
from agent.update.transfer.table import table_from_bytes
from agent.update.trust.manifest import FileEntry
from tests.support.update_fleet import Fleet, make_installer, snapshot

INFO = {"model_file": "m.tflite", "manifest_version": 1, "release": 1}


def _entry(data: bytes) -> FileEntry:
    return FileEntry("m.tflite", len(data), hashlib.sha256(data).hexdigest())


def _source(directory: Path, data: bytes) -> Path:
    directory.mkdir(parents=True)
    (directory / "m.tflite").write_bytes(data)
    return directory


def _stage(store: ModelStore, source: Path, data: bytes, tag: str) -> Path:
    sha = hashlib.sha256(data + tag.encode()).hexdigest()
    final = store.stage("detector", sha, [_entry(data)], source, info=INFO, manifest_bytes=b"{}")
    return final / "m.tflite"


def test_transfer_part_file_is_linked_everything_else_copied(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = ModelStore(state)
    data = os.urandom(70_000)
    part = _source(state / TRANSFER_DIR / "abc" / "files", data) / "m.tflite"
    staged = _stage(store, part.parent, data, "linked")
    assert staged.stat().st_ino == part.stat().st_ino  # no copy
    assert part.stat().st_nlink == 2
    assert not os.access(part, os.W_OK) or os.geteuid() == 0  # read-only through both names
    # The same bytes from outside the transfer area (a USB stick): copied, hashed.
    usb = _source(tmp_path / "usb", data) / "m.tflite"
    copied = _stage(store, usb.parent, data, "usb")
    assert copied.stat().st_ino != usb.stat().st_ino
    assert usb.stat().st_nlink == 1
    # A part file that already has a second name could be written through it: copied.
    other = _source(state / TRANSFER_DIR / "def" / "files", data) / "m.tflite"
    os.link(other, tmp_path / "second-name")
    again = _stage(store, other.parent, data, "two-names")
    assert again.stat().st_ino != other.stat().st_ino


def test_linked_part_with_wrong_bytes_is_copied_and_rejected(tmp_path: Path) -> None:
    """A part file of the wrong length is never linked; the copy path rejects it."""
    state = tmp_path / "state"
    store = ModelStore(state)
    data = os.urandom(5000)
    source = _source(state / TRANSFER_DIR / "x" / "files", data + b"!")
    with pytest.raises(UpdateError) as info:
        _stage(store, source, data, "long")
    assert info.value.reason is Reason.LENGTH_MISMATCH
    assert list(store.slot_dir("detector").iterdir()) == []


@pytest.fixture
def fleet(tmp_path: Path, short_range_model: Path) -> Fleet:
    return Fleet(tmp_path / "fleet", short_range_model)


def _delivered(installer, fleet: Fleet, state: Path, **changes):
    """A verified manifest and its files where a finished MQTT transfer leaves them."""
    bundle = fleet.bundle(**changes)
    installer.recover()
    verified = installer.verify(read_manifest(bundle))
    check_chunk_index(bundle, verified.manifest)
    files = state / TRANSFER_DIR / verified.manifest.chunk_index.sha256 / "files"
    shutil.rmtree(files.parent, ignore_errors=True)  # the service removes it after each install
    files.mkdir(parents=True)
    for entry in verified.manifest.files:
        shutil.copyfile(bundle / entry.name, files / entry.name)
    return verified, files


def _flip(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with path.open("r+b") as handle:  # in place: the same inode the store may share
        handle.write(data)


def test_install_from_transfer_links_and_commits(tmp_path: Path, fleet: Fleet) -> None:
    state = tmp_path / "state"
    installer = make_installer(state, fleet)
    verified, files = _delivered(installer, fleet, state)
    result = installer.install(verified, files)
    assert result.outcome == "committed"
    model = installer.store.current_model("detector")
    assert model is not None
    part = files / fleet.model.name
    assert model.stat().st_ino == part.stat().st_ino
    assert model.read_bytes() == fleet.model.read_bytes()


def test_wrong_bytes_in_a_linked_part_never_activate(tmp_path: Path, fleet: Fleet) -> None:
    """Same length, one byte flipped after the transfer: the pre-activation hash rejects it."""
    state = tmp_path / "state"
    installer = make_installer(state, fleet)
    first, files = _delivered(installer, fleet, state)
    assert installer.install(first, files).outcome == "committed"
    active = installer.store.current_model("detector")
    models_before = snapshot(state / "models")
    verified, files = _delivered(installer, fleet, state, manifest_version=2)
    _flip(files / fleet.model.name)
    with pytest.raises(UpdateError) as info:
        installer.install(verified, files)
    assert info.value.reason is Reason.HASH_MISMATCH
    assert snapshot(state / "models") == models_before
    assert installer.store.current_model("detector") == active
    assert (files / fleet.model.name).stat().st_nlink == 1  # the staged link is gone


def test_t15_linked_version_file_modified_before_activation(tmp_path: Path, fleet: Fleet) -> None:
    state = tmp_path / "state"

    def tamper(step: str) -> None:
        if step == "stage_after_rename":
            version = next((state / "models" / "detector").glob(".v-*"))
            version.chmod(0o755)
            _flip(version / fleet.model.name)

    installer = make_installer(state, fleet, fault=tamper)
    verified, files = _delivered(installer, fleet, state)
    with pytest.raises(UpdateError) as info:
        installer.install(verified, files)
    assert info.value.reason is Reason.HASH_MISMATCH
    assert installer.store.current_model("detector") is None
    assert list((state / "models" / "detector").iterdir()) == []


def test_transfer_never_writes_a_part_file_the_store_links(tmp_path: Path) -> None:
    chunk = 1024
    data = os.urandom(chunk * 6 + 5)
    table = table_from_bytes(chunk, [("m.bin", len(data), hashlib.sha256(data).hexdigest())], data)
    parts = PartFiles(tmp_path / "t", table)
    parts.open()
    for index in range(table.total_chunks):
        parts.write(0, index, data[index * chunk : (index + 1) * chunk])
    (path,) = parts.finish()
    parts.close()
    staged = tmp_path / "staged.bin"
    os.link(path, staged)  # what ModelStore.stage does
    again = PartFiles(tmp_path / "t", table)
    again.open()  # a restart over the same transfer dir
    assert again.bitmap.count == 0  # starts that file over instead of trusting a shared inode
    assert again.path(0).stat().st_ino != staged.stat().st_ino
    again.write(0, 0, data[:chunk])
    again.close()
    assert staged.read_bytes() == data
