"""The TensorRT engine cache under ``<state_dir>/engines``: runtime facts and pruning.

Entries are ``<key>.engine`` plus a ``<key>.json`` sidecar (``trt_build``). Staging
hard-links an entry into its version dir, so while that dir exists the entry has
``st_nlink > 1``; a rebuilt engine (``engine_refresh``) is never linked and is kept
while the ONNX file it was built from is installed. Pruning runs only where no staging
can be in progress in this process: daemon start-up (before the update service starts)
and after each install, recovery and rollback of ``PruningInstaller`` (the installer
runs one deployment at a time). Young entries are kept for a staging in another
process (``edge-agent update install`` beside the daemon).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.fsutil import fsync_dir
from agent.inference.trt_build import BuildTarget, current_target
from agent.log import get_logger
from agent.update.engines.builder import ENGINE_PREFIX, ENGINES_DIR, read_sidecar
from agent.update.engines.policy import CacheEntry, engines_to_prune
from agent.update.store.installer import Installer
from agent.update.store.models import META_NAME, VERSION_RE
from agent.update.store.outcome import InstallResult
from agent.update.trust.verify import Verified

log = get_logger(__name__)

# A staging in another process writes its entry, then links it within moments.
PRUNE_MIN_AGE_S = 900.0
ENGINE_SUFFIX = ".engine"


def runtime_target(device_index: int = 0) -> BuildTarget | None:
    """TensorRT version, GPU and compute capability importable now; None without them."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return None
    try:
        return current_target(trt, device_index)
    except AgentError as exc:
        log.warning("trt_runtime_unavailable", error=str(exc))
        return None


def _version_dirs(state_dir: Path) -> list[Path]:
    models = state_dir / "models"
    if not models.is_dir():
        return []
    return [
        entry
        for slot in models.iterdir()
        if slot.is_dir() and not slot.is_symlink()
        for entry in slot.iterdir()
        if VERSION_RE.match(entry.name) and entry.is_dir() and not entry.is_symlink()
    ]


def installed_references(state_dir: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(cache names the version dirs hold as ``_engine-*``, ONNX sha256s they were built from)."""
    names: set[str] = set()
    onnx: set[str] = set()
    for version in _version_dirs(state_dir):
        names.update(
            p.name.removeprefix(ENGINE_PREFIX)
            for p in version.iterdir()
            if p.name.startswith(ENGINE_PREFIX)
        )
        try:
            info: dict[str, Any] = json.loads((version / META_NAME).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        engine = info.get("engine")
        if isinstance(engine, dict) and isinstance(engine.get("onnx_sha256"), str):
            onnx.add(engine["onnx_sha256"])
    return frozenset(names), frozenset(onnx)


def scan_cache(cache_dir: Path, now_s: float) -> list[CacheEntry]:
    entries: list[CacheEntry] = []
    for path in sorted(cache_dir.glob(f"*{ENGINE_SUFFIX}")):
        if path.name.startswith("."):  # an atomic write in progress
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        facts = read_sidecar(path)
        sha = facts.get("onnx_sha256")
        entries.append(
            CacheEntry(
                name=path.name,
                links=st.st_nlink,
                age_s=now_s - st.st_mtime,
                onnx_sha256=sha if isinstance(sha, str) else "",
                facts=facts,
            )
        )
    return entries


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def prune_engine_cache(
    state_dir: Path,
    *,
    runtime: BuildTarget | None,
    min_age_s: float = PRUNE_MIN_AGE_S,
    now_s: float | None = None,
) -> list[str]:
    """Remove cache entries (engine + sidecar) nothing needs; returns the engine names removed."""
    cache = state_dir / ENGINES_DIR
    if not cache.is_dir():
        return []
    now = time.time() if now_s is None else now_s
    referenced, live_onnx = installed_references(state_dir)
    entries = scan_cache(cache, now)
    doomed = engines_to_prune(
        entries, referenced=referenced, live_onnx=live_onnx, runtime=runtime, min_age_s=min_age_s
    )
    freed = 0
    targets = [cache / name for name in doomed]
    # Sidecars whose engine is gone (a crash between the two writes, or removed by hand).
    for sidecar in cache.glob("*.json"):
        engine = sidecar.with_suffix(ENGINE_SUFFIX)
        if not sidecar.name.startswith(".") and not engine.exists():
            with contextlib.suppress(OSError):
                if now - sidecar.lstat().st_mtime >= min_age_s:
                    targets.append(sidecar)
    for path in targets:
        for victim in (
            (path, path.with_suffix(".json")) if path.suffix == ENGINE_SUFFIX else (path,)
        ):
            size = _size(victim)
            try:
                victim.unlink()
            except FileNotFoundError:
                continue
            freed += size
    if targets:
        fsync_dir(cache)
        log.info(
            "engine_cache_pruned",
            removed=doomed,
            bytes_freed=freed,
            kept=len(entries) - len(doomed),
        )
    return doomed


def prune_quietly(state_dir: Path, *, runtime: BuildTarget | None) -> None:
    """``prune_engine_cache`` that logs instead of raising: housekeeping never fails a caller."""
    try:
        prune_engine_cache(state_dir, runtime=runtime)
    except OSError as exc:
        log.warning("engine_cache_prune_failed", error=str(exc))


class PruningInstaller(Installer):
    """An ``Installer`` that prunes the engine cache once each deployment step is over.

    ``gc`` and ``discard`` remove version dirs after a commit, rollback or rejection; the
    engines they linked become prunable then. Runs on the installer's own thread, so no
    staging of this process is in progress.
    """

    def install(self, verified: Verified, files_dir: Path) -> InstallResult:
        try:
            return super().install(verified, files_dir)
        finally:
            self._prune()

    def recover(self) -> list[InstallResult]:
        try:
            return super().recover()
        finally:
            self._prune()

    def operator_rollback(self, slot: str) -> InstallResult:
        try:
            return super().operator_rollback(slot)
        finally:
            self._prune()

    def _prune(self) -> None:
        prune_quietly(self.state_dir, runtime=runtime_target())
