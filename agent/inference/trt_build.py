"""On-device TensorRT engine build from an ONNX file, at staging time, with a cache.

An engine only runs on the TensorRT version and GPU that built it, so one signed
bundle carries the portable ONNX file and each Jetson builds its own engine when
the update is staged (never on the first frame). Engines are cached under
``cache_dir`` by (ONNX sha256, TensorRT version, GPU name, compute capability,
precision), so a restart or a rollback to a model seen before costs nothing.
"""

from __future__ import annotations

import importlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import BackendUnavailableError, ModelLoadError
from agent.fsutil import atomic_write_bytes, atomic_write_json, sha256_file
from agent.inference.backends.specs import guess_layout, resolve_input_shape
from agent.inference.backends.tensorrt import make_logger
from agent.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BuildTarget:
    trt_version: str
    gpu: str
    compute_capability: str
    fp16: bool = True


def engine_cache_name(onnx_sha256: str, target: BuildTarget) -> str:
    """File name of the cached engine: stable, filesystem-safe, one per (model, stack)."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", target.gpu).strip("-").lower() or "gpu"
    precision = "fp16" if target.fp16 else "fp32"
    return (
        f"{onnx_sha256[:16]}-trt{target.trt_version}-sm{target.compute_capability.replace('.', '')}"
        f"-{gpu}-{precision}.engine"
    )


def current_target(trt: Any, device_index: int = 0, fp16: bool = True) -> BuildTarget:
    try:
        cuda = importlib.import_module("pycuda.driver")
        cuda.init()
        device = cuda.Device(device_index)
        major, minor = device.compute_capability()
        name = str(device.name())
    except Exception as exc:  # ImportError, or pycuda errors without a driver
        raise BackendUnavailableError(
            f"no CUDA device to build for: {exc}", backend="tensorrt"
        ) from exc
    return BuildTarget(str(trt.__version__), name, f"{major}.{minor}", fp16)


def build_engine(
    onnx_path: Path,
    cache_dir: Path,
    *,
    input_size: tuple[int, int] | None = None,
    fp16: bool = True,
    workspace_mb: int = 1024,
    device_index: int = 0,
) -> Path:
    """The cached engine for ``onnx_path`` on this device, built first if missing.

    Dynamic input dims become a single-shape optimisation profile (batch 1, ``input_size``).
    """
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT is not importable: {exc}", backend="tensorrt"
        ) from exc
    target = current_target(trt, device_index, fp16)
    onnx_sha = sha256_file(onnx_path)
    engine_path = cache_dir / engine_cache_name(onnx_sha, target)
    if engine_path.exists():
        log.info("trt_engine_cache_hit", engine=engine_path.name)
        return engine_path
    started = time.monotonic()
    data = _build(trt, onnx_path, input_size=input_size, fp16=fp16, workspace_mb=workspace_mb)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(engine_path, data)
    atomic_write_json(
        engine_path.with_suffix(".json"),
        {
            "onnx_sha256": onnx_sha,
            "tensorrt": target.trt_version,
            "gpu": target.gpu,
            "compute_capability": target.compute_capability,
            "fp16": target.fp16,
        },
    )
    log.info(
        "trt_engine_built",
        engine=engine_path.name,
        seconds=round(time.monotonic() - started, 1),
        bytes=len(data),
    )
    return engine_path


def _build(
    trt: Any, onnx_path: Path, *, input_size: tuple[int, int] | None, fp16: bool, workspace_mb: int
) -> bytes:
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and not trt.__version__.startswith("10."):
        # TensorRT 8.x needs explicit batch for ONNX; 10.x is always explicit (flag deprecated).
        flags = 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelLoadError(
            f"TensorRT's ONNX parser refused {onnx_path.name}: {'; '.join(errors)}",
            model=str(onnx_path),
        )
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = workspace_mb << 20
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    dynamic = False
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        dims = [int(d) for d in tensor.shape]
        if any(d < 0 for d in dims):
            dynamic = True
            shape = resolve_input_shape(
                [d if d >= 0 else None for d in dims], guess_layout(dims), input_size
            )
            profile.set_shape(tensor.name, shape, shape, shape)
    if dynamic:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None or logger.errors:
        raise ModelLoadError(
            f"TensorRT engine build failed for {onnx_path.name}: {'; '.join(logger.errors)}",
            model=str(onnx_path),
        )
    return bytes(serialized)
