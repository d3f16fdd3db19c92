"""Content-addressed model store: read-only version dirs per slot, ``current``/``previous`` links.

Layout under ``<state_dir>/models/<slot>/``: ``.v-<bundle_sha>/`` (0555, files
0444) plus the symlinks ``current`` and ``previous``, each switched by creating
``<name>.tmp-link`` and renaming it over the old link (one atomic step).

Files a finished MQTT or HTTPS transfer left under ``<state_dir>/transfer/`` (every chunk
verified against the signed chunk index, same filesystem, agent-owned, one link) are
hard-linked into the staging dir instead of copied; every other source (a bundle dir on
a USB stick) is copied and hashed while copying. Either way the version dir is re-hashed
right before activation (``verify_version``), which for a linked file is its only hash
on the install path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from agent.errors import ActivationError, DownloadError, Reason, StorageError
from agent.fsutil import fsync_dir
from agent.log import get_logger
from agent.update.store import faults
from agent.update.store.stagefiles import check_file, copy_verified, link_verified_part
from agent.update.trust.manifest import FileEntry

log = get_logger(__name__)

PREFIX = ".v-"
TRANSFER_DIR = "transfer"  # <state_dir>/transfer: the MQTT transfer's own part files
VERSION_RE = re.compile(r"^\.v-([0-9a-f]{64})$")
META_NAME = "_version.json"  # store-owned; manifest file names cannot start with "_"
MANIFEST_NAME = "_manifest.dsse.json"
POINTERS = ("current", "previous")
FreeBytes = Callable[[Path], int]


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def rmtree_readonly(path: Path) -> None:
    """Remove a tree even when its dirs are 0555 (version dirs are made read-only)."""
    if path.is_symlink() or not path.exists():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    if path.is_dir():
        for dirpath, _dirs, _files in os.walk(path):
            os.chmod(dirpath, 0o700)  # noqa: PTH101 - walk yields str paths
        shutil.rmtree(path)
    else:
        path.unlink()


class ModelStore:
    def __init__(
        self,
        state_dir: Path,
        *,
        free_bytes: FreeBytes = disk_free_bytes,
        fault: faults.FaultHook = faults.hit,
        margin_bytes: int = 1 << 20,
    ) -> None:
        self.root = state_dir / "models"
        self._free_bytes = free_bytes
        self._fault = fault
        self._margin = margin_bytes

    # --- reading ---------------------------------------------------------------

    def slot_dir(self, slot: str) -> Path:
        return self.root / slot

    def slots(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink())

    def version_dir(self, slot: str, sha: str) -> Path:
        return self.slot_dir(slot) / f"{PREFIX}{sha}"

    def pointer(self, slot: str, name: str) -> str | None:
        """Bundle sha a pointer names, when it names a complete version dir."""
        try:
            target = str((self.slot_dir(slot) / name).readlink())
        except OSError:
            return None
        match = VERSION_RE.match(target)
        if match is None or not (self.slot_dir(slot) / target / META_NAME).is_file():
            return None
        return match.group(1)

    def current_sha(self, slot: str) -> str | None:
        return self.pointer(slot, "current")

    def previous_sha(self, slot: str) -> str | None:
        return self.pointer(slot, "previous")

    def version_info(self, slot: str, sha: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = json.loads(
                (self.version_dir(slot, sha) / META_NAME).read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            return None
        return info

    def current_model(self, slot: str) -> Path | None:
        """Resolved path of the active model file of ``slot``; None until an update is installed.

        Resolved once through ``current`` so every file of one load comes from one version.
        """
        sha = self.current_sha(slot)
        info = self.version_info(slot, sha) if sha else None
        if sha is None or info is None:
            return None
        # A staging-time TensorRT engine (derived from the signed ONNX file) is what runs.
        name = info.get("engine_file") or info["model_file"]
        return self.version_dir(slot, sha).resolve() / str(name)

    # --- staging ---------------------------------------------------------------

    def stage(
        self,
        slot: str,
        sha: str,
        files: Sequence[FileEntry],
        source_dir: Path,
        *,
        info: dict[str, Any],
        manifest_bytes: bytes,
        derive: Callable[[Path], dict[str, Any]] | None = None,
    ) -> Path:
        """Copy and verify (or link, see the module doc) every file into ``.v-<sha>``.

        Idempotent for an already complete dir. A linked file is length-checked here and
        hashed by ``verify_version``, which the caller runs before activation.

        ``derive`` runs on the staging dir after every file verified and before the
        metadata is written: it may add store-owned ``_`` files and returns metadata to
        merge (a failure removes the staging dir, like any other).
        """
        final = self.version_dir(slot, sha)
        if final.is_dir() and (final / META_NAME).is_file():
            self.verify_version(slot, sha, files)
            return final
        slot_dir = self.slot_dir(slot)
        slot_dir.mkdir(parents=True, exist_ok=True)
        need = sum(f.length for f in files) + len(manifest_bytes) + self._margin
        free = self._free_bytes(slot_dir)
        if free < need:
            raise ActivationError(
                Reason.INSUFFICIENT_SPACE,
                f"{need} bytes needed to stage, {free} free",
                need=need,
                free=free,
            )
        tmp = slot_dir / f"{PREFIX}{sha}.tmp"
        rmtree_readonly(tmp)
        if final.exists():
            rmtree_readonly(final)  # incomplete (no meta): a crash leftover
        tmp.mkdir(mode=0o700)
        linkable = self._from_transfer(source_dir)
        try:
            for entry in files:
                src, dst = source_dir / entry.name, tmp / entry.name
                if linkable and link_verified_part(src, dst, entry):
                    if derive is not None:  # the derived file is built from these bytes
                        check_file(dst, entry)
                    continue
                copy_verified(src, dst, entry)
            meta = {**info, **derive(tmp)} if derive is not None else info
            for name, data in (
                (MANIFEST_NAME, manifest_bytes),
                (META_NAME, json.dumps(meta, sort_keys=True).encode("utf-8")),
            ):
                fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            for child in tmp.iterdir():
                child.chmod(0o444)
            fsync_dir(tmp)
            tmp.chmod(0o555)
        except FileNotFoundError as exc:
            rmtree_readonly(tmp)
            raise DownloadError(
                Reason.LENGTH_MISMATCH, f"bundle file missing: {exc.filename}"
            ) from exc
        except BaseException:
            rmtree_readonly(tmp)
            raise
        self._fault("stage_before_rename")
        tmp.rename(final)
        self._fault("stage_after_rename")
        fsync_dir(slot_dir)
        log.info("model_staged", slot=slot, sha=sha)
        return final

    def _from_transfer(self, source_dir: Path) -> bool:
        """``source_dir`` lies in this state dir's transfer area (files the transfer verified)."""
        try:
            return source_dir.resolve().is_relative_to((self.root.parent / TRANSFER_DIR).resolve())
        except OSError:
            return False

    def verify_version(self, slot: str, sha: str, files: Iterable[FileEntry]) -> None:
        """Re-hash a version dir right before it goes live (time-of-check/time-of-use)."""
        for entry in files:
            check_file(self.version_dir(slot, sha) / entry.name, entry)

    def discard(self, slot: str, sha: str) -> None:
        if sha not in (self.current_sha(slot), self.previous_sha(slot)):
            rmtree_readonly(self.version_dir(slot, sha))

    # --- pointers ----------------------------------------------------------------

    def _set_pointer(self, slot: str, name: str, sha: str | None) -> None:
        slot_dir = self.slot_dir(slot)
        link = slot_dir / name
        if sha is None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            fsync_dir(slot_dir)
            return
        tmp = slot_dir / f"{name}.tmp-link"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(f"{PREFIX}{sha}")
        self._fault(f"{name}_link_created")
        tmp.replace(link)
        self._fault(f"{name}_renamed")
        fsync_dir(slot_dir)

    def activate(self, slot: str, new_sha: str, prev_sha: str | None) -> None:
        """``previous`` → prev, then ``current`` → new; each one rename (idempotent on re-run)."""
        if not (self.version_dir(slot, new_sha) / META_NAME).is_file():
            raise ActivationError(Reason.INCONSISTENT, f"version {new_sha} is not staged")
        if prev_sha != new_sha:
            self._set_pointer(slot, "previous", prev_sha)
        self._set_pointer(slot, "current", new_sha)
        log.info("model_activated", slot=slot, sha=new_sha, previous=prev_sha)

    def restore(self, slot: str, prev_sha: str | None) -> None:
        """Roll ``current`` back to ``prev_sha`` (None: back to the configured model)."""
        self._fault("rollback_swap")
        self._set_pointer(slot, "current", prev_sha)
        self._set_pointer(slot, "previous", None)
        log.info("model_restored", slot=slot, sha=prev_sha)

    def swap(self, slot: str) -> str:
        """Operator rollback: ``current`` ↔ ``previous``; returns the now active sha."""
        cur, prev = self.current_sha(slot), self.previous_sha(slot)
        if prev is None:
            raise ActivationError(Reason.INCONSISTENT, f"slot {slot} has no previous version")
        self._set_pointer(slot, "current", prev)
        self._set_pointer(slot, "previous", cur)
        return prev

    # --- housekeeping ------------------------------------------------------------

    def prune(self) -> list[str]:
        """Start-up: remove ``*.tmp`` dirs, ``*.tmp-link`` and anything that is not ours."""
        removed: list[str] = []
        for slot in self.slots():
            for entry in self.slot_dir(slot).iterdir():
                keep = (entry.name in POINTERS and entry.is_symlink()) or (
                    VERSION_RE.match(entry.name) is not None
                    and entry.is_dir()
                    and not entry.is_symlink()
                    and (entry / META_NAME).is_file()
                )
                if not keep:
                    rmtree_readonly(entry)
                    removed.append(f"{slot}/{entry.name}")
            fsync_dir(self.slot_dir(slot))
        if removed:
            log.info("store_pruned", removed=removed)
        return removed

    def gc(self, slot: str) -> list[str]:
        """Remove version dirs that neither ``current`` nor ``previous`` names."""
        keep = {self.current_sha(slot), self.previous_sha(slot)}
        removed: list[str] = []
        slot_dir = self.slot_dir(slot)
        if not slot_dir.is_dir():
            return removed
        for entry in slot_dir.iterdir():
            match = VERSION_RE.match(entry.name)
            if match is not None and match.group(1) not in keep and not entry.is_symlink():
                rmtree_readonly(entry)
                removed.append(match.group(1))
        if removed:
            fsync_dir(slot_dir)
        return removed

    def ensure_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"model store unusable: {exc}", path=str(self.root)) from exc


def is_readonly(path: Path) -> bool:
    return not (path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
