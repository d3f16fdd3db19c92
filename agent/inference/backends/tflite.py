"""TFLite backend: LiteRT (``ai-edge-litert``), falling back to ``tflite-runtime``.

tflite-runtime is frozen at 2.14 and its wheels are built against NumPy 1.x: with
NumPy 2 it imports but creating an Interpreter fails, so that fallback needs
``numpy<2`` (the ``[tflite-legacy]`` extra). LiteRT works with both.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailableError, InferenceError, ModelLoadError
from agent.inference.base import InputSpec, Layout, RuntimeInfo, TensorSpec
from agent.inference.registry import BackendOptions
from agent.log import get_logger

log = get_logger(__name__)


def _load_runtime() -> tuple[Any, RuntimeInfo]:
    """The Interpreter class of the first runtime that imports, with its name and version."""
    for module_name, dist in (
        ("ai_edge_litert.interpreter", "ai-edge-litert"),
        ("tflite_runtime.interpreter", "tflite-runtime"),
    ):
        try:
            module = __import__(module_name, fromlist=["Interpreter"])
        except ImportError:
            continue
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown"
        return module.Interpreter, RuntimeInfo(name=dist, version=version)
    raise BackendUnavailableError(
        "no TFLite runtime: install ai-edge-litert (or tflite-runtime with numpy<2)",
        backend="tflite",
    )


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hide the runtime's "Created TensorFlow Lite XNNPACK delegate" line (C-level stderr)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with Path(os.devnull).open("wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(v) for v in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _layout(shape: tuple[int, ...]) -> Layout:
    # TFLite image models are NHWC; a channels-first export shows 1 or 3 in dim 1.
    if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
        return "nchw"
    return "nhwc"


class TfliteBackend:
    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        interpreter_cls, runtime = _load_runtime()
        self._path = model_path
        delegates: list[Any] = []
        if options.edgetpu:
            # Imported here only: boards without a Coral never load the delegate module.
            from agent.inference.backends.edgetpu import (  # noqa: PLC0415 - optional accelerator
                load_edgetpu_delegate,
            )

            delegates.append(load_edgetpu_delegate(options.edgetpu_library))
            runtime = RuntimeInfo(runtime.name, runtime.version, device="edgetpu")
        if not model_path.is_file():
            raise ModelLoadError(f"model file not found: {model_path}", model=str(model_path))
        try:
            with _quiet_stderr():
                kwargs: dict[str, Any] = {"model_path": str(model_path)}
                if delegates:
                    kwargs["experimental_delegates"] = delegates
                else:
                    kwargs["num_threads"] = options.threads
                self._interp = interpreter_cls(**kwargs)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError, SystemError, OSError) as exc:
            raise ModelLoadError(
                f"{runtime.name} cannot load {model_path.name}: {exc}", model=str(model_path)
            ) from exc
        inputs = self._interp.get_input_details()
        if len(inputs) != 1:
            raise ModelLoadError(
                f"expected one image input, model has {len(inputs)}", model=str(model_path)
            )
        in_spec = _spec(inputs[0])
        self._input_index = int(inputs[0]["index"])
        self._input_spec = InputSpec(in_spec, _layout(in_spec.shape))
        outputs = self._interp.get_output_details()
        self._output_specs = [_spec(d) for d in outputs]
        self._output_indices = [int(d["index"]) for d in outputs]
        self._buffer = np.zeros(in_spec.shape, in_spec.dtype)
        self._runtime = RuntimeInfo(
            runtime.name,
            runtime.version,
            device=runtime.device,
            extra={"threads": str(options.threads)},
        )
        log.info(
            "model_loaded",
            model=model_path.name,
            runtime=runtime.name,
            version=runtime.version,
            input=list(in_spec.shape),
        )

    @property
    def input_spec(self) -> InputSpec:
        return self._input_spec

    @property
    def output_specs(self) -> list[TensorSpec]:
        return list(self._output_specs)

    @property
    def runtime(self) -> RuntimeInfo:
        return self._runtime

    def input_buffer(self) -> npt.NDArray[np.generic]:
        return self._buffer

    def infer(self, tensor: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        try:
            # set_tensor copies: no view into the interpreter is held across invoke().
            self._interp.set_tensor(self._input_index, tensor)
            self._interp.invoke()
            return [self._interp.get_tensor(i) for i in self._output_indices]
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"invoke failed: {exc}", model=str(self._path)) from exc

    def close(self) -> None:
        # The interpreter frees its arena when collected; drop the reference now.
        self._interp = None
