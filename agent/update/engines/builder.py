"""Staging-time TensorRT engine build for slots that run TensorRT but receive an ONNX file.

The signed ONNX file stays the verified artifact; the engine is derived data built
on this device (``agent.inference.trt_build``), cached under ``<state_dir>/engines``
by (ONNX hash, TensorRT version, GPU, precision) and hard-linked into the new
version dir before that dir is complete, so ``current`` names the engine atomically
with the files it was built from. An engine shipped inside a bundle is never used
for this path.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.errors import ActivationError, AgentError, Reason
from agent.log import get_logger

log = get_logger(__name__)

# (onnx_path, cache_dir) -> cached engine path; raises AgentError (or OSError) on failure.
EngineBuilder = Callable[[Path, Path], Path]
ENGINE_PREFIX = "_engine-"  # store-owned: manifest file names cannot start with "_"
ENGINES_DIR = "engines"


def needs_engine(model_file: str) -> bool:
    return model_file.lower().endswith(".onnx")


def default_engine_builder(
    onnx_path: Path, cache_dir: Path, *, input_size: tuple[int, int] | None = None
) -> Path:
    """``trt_build.build_engine``, imported only here so a Pi never imports TensorRT."""
    from agent.inference.trt_build import build_engine  # noqa: PLC0415 - TensorRT only when used

    return build_engine(onnx_path, cache_dir, input_size=input_size)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same filesystem under the state dir: no second copy on disk
    except OSError:
        shutil.copyfile(src, dst)


def read_sidecar(engine: Path) -> dict[str, Any]:
    """The JSON facts next to a cached engine (``<key>.json``); {} when missing or unreadable."""
    try:
        facts: dict[str, Any] = json.loads(engine.with_suffix(".json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return facts


def engine_stage_step(
    builder: EngineBuilder, cache_dir: Path, model_file: str
) -> Callable[[Path], dict[str, Any]]:
    """A ``ModelStore.stage`` step: build from the verified copy in the staging dir.

    Returns the metadata to merge into the version's ``_version.json``. Every failure
    is one ``ActivationError`` (``incompatible``; ``insufficient_space`` for a full disk).
    """

    def step(staging_dir: Path) -> dict[str, Any]:
        try:
            engine = builder(staging_dir / model_file, cache_dir)
            name = f"{ENGINE_PREFIX}{engine.name}"
            _link_or_copy(engine, staging_dir / name)
        except AgentError as exc:
            raise ActivationError(
                Reason.INCOMPATIBLE, f"TensorRT engine build failed: {exc}", model=model_file
            ) from exc
        except OSError as exc:
            reason = (
                Reason.INSUFFICIENT_SPACE
                if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else Reason.INCOMPATIBLE
            )
            raise ActivationError(
                reason, f"TensorRT engine build failed: {exc}", model=model_file
            ) from exc
        log.info("engine_staged", model=model_file, engine=engine.name)
        return {"engine_file": name, "engine": {"cache_name": engine.name, **read_sidecar(engine)}}

    return step
