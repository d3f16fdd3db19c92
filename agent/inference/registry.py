"""Backend registry: name → "module:Class", imported only when selected.

Never import a runtime at module level here: a Pi must not import TensorRT.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from agent.errors import BackendUnavailableError
from agent.inference.base import Backend


@dataclass(frozen=True, slots=True)
class BackendOptions:
    threads: int = 2
    # EdgeTPU delegate for the tflite backend (a *_edgetpu.tflite model).
    edgetpu: bool = False
    edgetpu_library: str = "libedgetpu.so.1"
    # GPU index for CUDA-based backends.
    device_index: int = 0
    # ONNX Runtime execution providers in order of preference ("cuda", "tensorrt", "cpu" or
    # full names such as "CUDAExecutionProvider"); empty means CPU only.
    providers: tuple[str, ...] = ()
    # (height, width) for models whose input size is dynamic; None takes the backend default.
    input_size: tuple[int, int] | None = None


BACKENDS: dict[str, str] = {
    "tflite": "agent.inference.backends.tflite:TfliteBackend",
    "onnx": "agent.inference.backends.onnx:OnnxBackend",
    "tensorrt": "agent.inference.backends.tensorrt:TensorRTBackend",
}


def create_backend(name: str, model_path: Path, options: BackendOptions) -> Backend:
    """Load ``model_path`` with the named backend.

    Raises BackendUnavailableError (unknown name, runtime not installed) or
    ModelLoadError (runtime refused the file).
    """
    target = BACKENDS.get(name)
    if target is None:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}", backend=name
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name!r} cannot be imported: {exc}", backend=name
        ) from exc
    backend_cls = getattr(module, class_name)
    return cast("Backend", backend_cls(model_path, options))
