"""ONNX Runtime backend (``backend = "onnx"``, extra ``[onnx]``).

CPU by default. ``options.providers`` picks execution providers in order of
preference ("tensorrt", "cuda", "cpu", full provider names, or "auto" for every
accelerated provider this onnxruntime build has); names the build lacks are
skipped with a warning and CPU is always the last resort. Dynamic input dims are
fixed once at load (batch 1, ``options.input_size`` or a default for height and
width) and one warm-up run on zeros fixes the output shapes.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailableError, InferenceError, ModelLoadError
from agent.inference.backends.specs import guess_layout, is_dynamic, resolve_input_shape
from agent.inference.base import InputSpec, RuntimeInfo, TensorSpec
from agent.inference.registry import BackendOptions
from agent.log import get_logger

log = get_logger(__name__)

CPU = "CPUExecutionProvider"
PROVIDER_ALIASES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
# "auto" order: the fastest engine first, CPU always last.
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

ONNX_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Requested provider names (aliases allowed) that this build has, in order, CPU last."""
    wanted: list[str] = []
    for name in requested:
        if name.lower() == "auto":
            wanted.extend(p for p in AUTO_ORDER if p in available)
            continue
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            log.warning("onnx_provider_unavailable", provider=full, available=list(available))
            continue
        wanted.append(full)
    ordered = list(dict.fromkeys(p for p in wanted if p != CPU))
    return [*ordered, CPU]


def _import_ort() -> Any:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is not installed; install edge-agent[onnx]", backend="onnx"
        ) from exc


def _dims(shape: Sequence[object]) -> list[int | None]:
    # ONNX Runtime reports symbolic dims as strings ("batch", "?") and unknown ones as None.
    return [dim if isinstance(dim, int) else None for dim in shape]


def _dtype(type_name: str, model: str) -> np.dtype[np.generic]:
    scalar = ONNX_DTYPES.get(type_name)
    if scalar is None:
        raise ModelLoadError(f"unsupported ONNX tensor type {type_name}", model=model)
    return np.dtype(scalar)


class OnnxBackend:
    """One ONNX Runtime session. ``infer`` is called by one thread at a time."""

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        ort = _import_ort()
        self._model = str(model_path)
        if not model_path.is_file():
            raise ModelLoadError(f"model file not found: {model_path}", model=self._model)
        providers = choose_providers(options.providers, ort.get_available_providers())
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = max(1, options.threads)
        # One model, one call at a time: parallelism inside operators, not between them.
        session_options.inter_op_num_threads = 1
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session: Any = ort.InferenceSession(
                str(model_path),
                sess_options=session_options,
                providers=[
                    (name, {"device_id": str(options.device_index)}) if name in AUTO_ORDER else name
                    for name in providers
                ],
            )
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ModelLoadError(
                f"onnxruntime refused {model_path.name}: {exc}", model=self._model
            ) from exc

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(
                f"expected one image input, model has {len(inputs)}", model=self._model
            )
        meta = inputs[0]
        dims = _dims(meta.shape)
        layout = guess_layout(dims)
        shape = resolve_input_shape(dims, layout, options.input_size)
        if is_dynamic(dims):
            log.info(
                "onnx_input_shape_resolved", model=model_path.name, declared=meta.shape, shape=shape
            )
        self._input_name: str = meta.name
        # Read by the loader and ``model inspect``: a dynamic input may be sized by metadata.
        h_axis, w_axis = (2, 3) if layout == "nchw" else (1, 2)
        self.dynamic_input = len(dims) == 4 and is_dynamic([dims[h_axis], dims[w_axis]])
        model_meta = self._session.get_modelmeta()
        self.metadata: dict[str, str] = dict(model_meta.custom_metadata_map or {})
        self._input = InputSpec(
            tensor=TensorSpec(name=meta.name, shape=shape, dtype=_dtype(meta.type, self._model)),
            layout=layout,
        )
        self._buffer: npt.NDArray[np.generic] = np.zeros(shape, dtype=self._input.tensor.dtype)
        outputs_meta = self._session.get_outputs()
        self._output_names: list[str] = [out.name for out in outputs_meta]
        # A warm-up on zeros both pays the first-run cost at load and fixes dynamic output dims.
        first = self._run(self._buffer)
        self._outputs = [
            TensorSpec(name=out.name, shape=tuple(arr.shape), dtype=arr.dtype)
            for out, arr in zip(outputs_meta, first, strict=True)
        ]
        active = self._session.get_providers()
        self._runtime = RuntimeInfo(
            name="onnxruntime",
            version=str(ort.__version__),
            device=f"cuda:{options.device_index}" if active[0] in AUTO_ORDER else "cpu",
            extra={
                "providers": ",".join(active),
                "threads": str(session_options.intra_op_num_threads),
            },
        )
        log.info(
            "onnx_model_loaded",
            model=model_path.name,
            providers=active,
            input_shape=shape,
            layout=layout,
            outputs=[o.shape for o in self._outputs],
        )

    @property
    def input_spec(self) -> InputSpec:
        return self._input

    @property
    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    @property
    def runtime(self) -> RuntimeInfo:
        return self._runtime

    def input_buffer(self) -> npt.NDArray[np.generic]:
        return self._buffer

    def _run(self, tensor: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        if self._session is None:
            raise InferenceError("backend is closed", model=self._model)
        try:
            results = self._session.run(self._output_names, {self._input_name: tensor})
        except Exception as exc:  # onnxruntime's pybind errors (shape, type, provider failures)
            raise InferenceError(f"onnxruntime run failed: {exc}", model=self._model) from exc
        return [np.asarray(result) for result in results]

    def infer(self, tensor: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        spec = self._input.tensor
        if tensor.shape != spec.shape or tensor.dtype != spec.dtype:
            raise InferenceError(
                f"input is {tensor.dtype}{list(tensor.shape)}, model wants "
                f"{spec.dtype}{list(spec.shape)}",
                model=self._model,
            )
        # Session.run returns fresh arrays that nothing else references: the caller owns them.
        return self._run(tensor)

    def close(self) -> None:
        # Dropping the session frees its arenas; a second close is harmless.
        self._session = None
