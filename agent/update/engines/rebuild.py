"""Rebuild a staging-built TensorRT engine that no longer fits this TensorRT or GPU.

An engine only deserializes on the TensorRT version and GPU that built it, and both
``current`` and ``previous`` of a TensorRT slot hold engines, so after a TensorRT/JetPack
upgrade or a GPU change the engine is rebuilt from the ONNX file in the same version
dir, once that file is re-checked against the signed manifest recorded beside it. The
rebuild goes into the engine cache, never into the read-only version dir: the signed
files and the pointers are not touched. Loads then take the cached rebuild
(``resolve_installed_engine``, called by ``agent.pipeline.model.load_model``); the
daemon runs the builds in the background (``agent.update.engines.refresh``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import AgentError, DownloadError, EngineRebuildError, ModelLoadError, Reason
from agent.inference.trt_build import BuildTarget, engine_cache_name
from agent.log import get_logger
from agent.update.engines.builder import ENGINE_PREFIX, ENGINES_DIR, EngineBuilder, read_sidecar
from agent.update.engines.policy import (
    Choice,
    EngineCheck,
    check_engine,
    choose_engine,
    describe,
    target_facts,
)
from agent.update.store.models import MANIFEST_NAME, META_NAME, VERSION_RE
from agent.update.store.stagefiles import check_file
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import FileEntry, parse_manifest
from agent.update.trust.verify import MAX_ENVELOPE_BYTES

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InstalledEngine:
    """A staging-built engine in a version dir, with the facts ``_version.json`` recorded."""

    state_dir: Path
    slot: str
    sha: str  # the bundle sha naming the version dir
    engine: Path
    onnx_name: str
    recorded: Mapping[str, Any]

    @property
    def version_dir(self) -> Path:
        return self.engine.parent

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / ENGINES_DIR

    @property
    def onnx(self) -> Path:
        return self.version_dir / self.onnx_name

    def target(self, runtime: BuildTarget) -> BuildTarget:
        """``runtime`` at the precision this engine was built with."""
        return BuildTarget(
            runtime.trt_version,
            runtime.gpu,
            runtime.compute_capability,
            bool(self.recorded.get("fp16", True)),
        )


def installed_engine(path: Path) -> InstalledEngine | None:
    """``path`` as a staging-built engine of ``<state>/models/<slot>/.v-<sha>/``, else None."""
    version = path.parent
    match = VERSION_RE.match(version.name)
    if match is None or not path.name.startswith(ENGINE_PREFIX):
        return None
    if version.parent.parent.name != "models":
        return None
    try:
        info: dict[str, Any] = json.loads((version / META_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    engine = info.get("engine")
    if info.get("engine_file") != path.name or not isinstance(info.get("model_file"), str):
        return None
    return InstalledEngine(
        state_dir=version.parent.parent.parent,
        slot=version.parent.name,
        sha=match.group(1),
        engine=path,
        onnx_name=info["model_file"],
        recorded=engine if isinstance(engine, dict) else {},
    )


def signed_onnx_entry(installed: InstalledEngine) -> FileEntry:
    """The ONNX file's signed length and hash, from the manifest kept in the version dir.

    The manifest is bound to its dir by name (``.v-<sha256 of its payload>``): its
    signature was checked when it was installed, and trust may have rotated since.
    """
    where = installed.version_dir / MANIFEST_NAME
    try:
        envelope = parse_envelope(where.read_bytes(), MAX_ENVELOPE_BYTES, "recorded manifest")
        if hashlib.sha256(envelope.payload).hexdigest() != installed.sha:
            raise EngineRebuildError(
                Reason.HASH_MISMATCH,
                f"the manifest recorded in {installed.version_dir.name} is not the one installed",
                model=str(installed.engine),
            )
        entry = parse_manifest(envelope.payload).file(installed.onnx_name)
    except OSError as exc:
        raise EngineRebuildError(
            Reason.INCONSISTENT, f"cannot read {where}: {exc}", model=str(installed.engine)
        ) from exc
    except KeyError as exc:
        raise EngineRebuildError(
            Reason.INCONSISTENT,
            f"the recorded manifest does not list {installed.onnx_name}",
            model=str(installed.engine),
        ) from exc
    except AgentError as exc:
        if isinstance(exc, EngineRebuildError):
            raise
        raise EngineRebuildError(
            Reason.INCONSISTENT, f"recorded manifest unreadable: {exc}", model=str(installed.engine)
        ) from exc
    recorded = installed.recorded.get("onnx_sha256")
    if isinstance(recorded, str) and recorded != entry.sha256:
        raise EngineRebuildError(
            Reason.HASH_MISMATCH,
            f"_version.json and the manifest disagree on the hash of {installed.onnx_name}",
            model=str(installed.engine),
        )
    return entry


@dataclass(frozen=True, slots=True)
class EnginePlan:
    installed: InstalledEngine
    check: EngineCheck
    choice: Choice
    rebuilt: Path | None  # the cache entry a rebuild for this runtime makes (or made)

    @property
    def path(self) -> Path | None:
        """What to load now; None until the rebuild is done."""
        if self.choice is Choice.REBUILT:
            return self.rebuilt
        return self.installed.engine if self.choice is Choice.INSTALLED else None


def _onnx_sha(installed: InstalledEngine) -> str | None:
    recorded = installed.recorded.get("onnx_sha256")
    if isinstance(recorded, str) and recorded:
        return recorded
    try:
        return signed_onnx_entry(installed).sha256
    except EngineRebuildError:
        return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def plan_engine(installed: InstalledEngine, runtime: BuildTarget | None) -> EnginePlan:
    check = check_engine(installed.recorded, runtime)
    sha = _onnx_sha(installed) if runtime is not None else None
    rebuilt = (
        installed.cache_dir / engine_cache_name(sha, installed.target(runtime))
        if sha is not None and runtime is not None
        else None
    )
    # The cache's own link to the version dir's engine is no rebuild; a copy or a new file is.
    in_cache = (
        rebuilt is not None and rebuilt.is_file() and not _same_file(rebuilt, installed.engine)
    )
    return EnginePlan(installed, check, choose_engine(check, rebuilt_in_cache=in_cache), rebuilt)


def resolve_installed_engine(path: Path, runtime: Callable[[], BuildTarget | None]) -> Path:
    """The engine to load for ``path``: itself, or its rebuild for this runtime.

    Raises ``ModelLoadError`` naming both stacks while the rebuild has not been made.
    """
    installed = installed_engine(path)
    if installed is None:
        return path
    target = runtime()
    plan = plan_engine(installed, target)
    if plan.path is not None:
        if plan.path != path:
            log.info("trt_engine_rebuild_used", slot=installed.slot, engine=plan.path.name)
        return plan.path
    now = describe(target_facts(target)) if target is not None else "another runtime"
    raise ModelLoadError(
        f"{path.name} was built for {describe(installed.recorded)} and this device has {now}; "
        f"the engine is rebuilt from the verified {installed.onnx_name}",
        model=str(path),
    )


def rebuild_engine(
    installed: InstalledEngine,
    builder: EngineBuilder,
    runtime: BuildTarget,
    *,
    force: bool = False,
) -> Path:
    """Check the ONNX file against the signed manifest, then build into the cache.

    ``force`` first drops the cache's entry for this runtime (its bytes did not load);
    the version dir keeps its own link. Raises ``EngineRebuildError``.
    """
    entry = signed_onnx_entry(installed)
    try:
        check_file(installed.onnx, entry)
    except DownloadError as exc:
        raise EngineRebuildError(exc.reason, exc.message, model=str(installed.onnx)) from exc
    target = installed.cache_dir / engine_cache_name(entry.sha256, installed.target(runtime))
    if force:
        for stale in (target, target.with_suffix(".json")):
            stale.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        built = builder(installed.onnx, installed.cache_dir)
    except AgentError as exc:
        raise EngineRebuildError(
            Reason.INCOMPATIBLE, f"TensorRT engine build failed: {exc}", model=str(installed.onnx)
        ) from exc
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise EngineRebuildError(
            Reason.INSUFFICIENT_SPACE if full else Reason.INCOMPATIBLE,
            f"TensorRT engine build failed: {exc}",
            model=str(installed.onnx),
        ) from exc
    facts = read_sidecar(built)
    if facts.get("onnx_sha256") != entry.sha256:  # built from other bytes than were checked
        built.unlink(missing_ok=True)
        raise EngineRebuildError(
            Reason.HASH_MISMATCH,
            f"{installed.onnx_name} changed while its engine was built",
            model=str(installed.onnx),
        )
    log.info(
        "trt_engine_rebuilt",
        slot=installed.slot,
        version=installed.sha[:12],
        old=describe(installed.recorded),
        new=describe(facts),
        old_engine=installed.engine.name.removeprefix(ENGINE_PREFIX),
        engine=built.name,
        seconds=round(time.monotonic() - started, 1),
    )
    return built
