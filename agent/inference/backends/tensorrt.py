"""TensorRT backend (``backend = "tensorrt"``): a serialized engine run through pycuda.

At load: deserialize the engine (an engine is tied to the TensorRT version and
GPU that built it, so a ``None`` or a logged error is a ``ModelLoadError``),
resolve dynamic input dims once from optimisation profile 0, then allocate one
page-locked host buffer and one device buffer per I/O tensor. Per frame: async
host-to-device copy, enqueue, async device-to-host copies, one stream
synchronize.

Threading: the backend owns an explicit CUDA context. It is made current only
for the duration of each call (push ... pop), so construction, ``infer`` and
``close`` may happen on different threads as long as they never overlap; the
pipeline calls ``infer`` from its one inference thread. A second thread calling
``infer`` while one is running gets an ``InferenceError`` instead of corrupting
the shared buffers.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailableError, InferenceError, ModelLoadError
from agent.inference.backends.specs import guess_layout
from agent.inference.backends.trt_bindings import (
    EngineIO,
    IOTensor,
    engine_io,
    resolve_dynamic_shape,
)
from agent.inference.base import InputSpec, RuntimeInfo, TensorSpec
from agent.inference.registry import BackendOptions
from agent.log import get_logger

log = get_logger(__name__)


def import_runtime() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver), or BackendUnavailableError naming what is missing."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT Python bindings are not importable ({exc}); on a Jetson install "
            "python3-libnvinfer from JetPack and create the venv with --system-site-packages",
            backend="tensorrt",
        ) from exc
    try:
        cuda = importlib.import_module("pycuda.driver")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"pycuda is not importable ({exc}); install edge-agent[tensorrt]", backend="tensorrt"
        ) from exc
    return trt, cuda


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards to structlog and keeps the errors it saw."""

    class _Logger(trt.ILogger):  # type: ignore[misc]  # base class only known at run time
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            sev = trt.ILogger.Severity
            if severity in (sev.ERROR, sev.INTERNAL_ERROR):
                self.errors.append(str(msg))
                log.error("tensorrt_log", message=str(msg))
            elif severity == sev.WARNING:
                log.warning("tensorrt_log", message=str(msg))
            else:
                log.debug("tensorrt_log", message=str(msg))

    return _Logger()


class TensorRTBackend:
    """One TensorRT engine with its own CUDA context, stream and buffers."""

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        trt, cuda = import_runtime()
        self._cuda = cuda
        self._model = str(model_path)
        self._lock = threading.Lock()
        self._closed = False
        self._device_buffers: list[Any] = []
        try:
            data = model_path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(
                f"cannot read engine {model_path}: {exc}", model=self._model
            ) from exc
        try:
            cuda.init()
            device = cuda.Device(options.device_index)
            gpu_name = str(device.name())
            major, minor = device.compute_capability()
            # make_context() pushes the new context onto this thread; it is popped right after load.
            self._ctx = device.make_context()
        except cuda.Error as exc:
            raise BackendUnavailableError(
                f"CUDA device {options.device_index} unavailable: {exc}", backend="tensorrt"
            ) from exc
        try:
            self._load(trt, data, model_path)
        except BaseException:
            self._release()
            raise
        finally:
            if not self._closed:
                self._ctx.pop()
        self._runtime_info = RuntimeInfo(
            name="tensorrt",
            version=str(trt.__version__),
            device=f"cuda:{options.device_index} ({gpu_name})",
            extra={"compute_capability": f"{major}.{minor}", "api": self._io.kind},
        )
        log.info(
            "tensorrt_engine_loaded",
            model=model_path.name,
            api=self._io.kind,
            input_shape=self._input.tensor.shape,
            outputs=[o.shape for o in self._outputs],
            gpu=gpu_name,
        )

    def _load(self, trt: Any, data: bytes, model_path: Path) -> None:
        cuda = self._cuda
        self._logger = make_logger(trt)
        self._trt_runtime = trt.Runtime(self._logger)
        self._engine = self._trt_runtime.deserialize_cuda_engine(data)
        if self._engine is None or self._logger.errors:
            detail = "; ".join(self._logger.errors) or "no detail"
            raise ModelLoadError(
                f"TensorRT could not deserialize {model_path.name} (an engine only runs on the "
                f"TensorRT version and GPU that built it): {detail}",
                model=self._model,
            )
        if getattr(self._engine, "has_implicit_batch_dimension", False):
            raise ModelLoadError(
                "implicit-batch engines (built from UFF/Caffe) are not supported; "
                "rebuild the engine from ONNX with an explicit batch dimension",
                model=self._model,
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelLoadError(
                f"TensorRT could not create an execution context: {'; '.join(self._logger.errors)}",
                model=self._model,
            )
        self._io: EngineIO = engine_io(trt, self._engine, self._context)
        tensors = self._io.tensors()
        inputs = [t for t in tensors if t.is_input]
        if len(inputs) != 1:
            raise ModelLoadError(
                f"expected one image input, engine has {len(inputs)}", model=self._model
            )
        declared = inputs[0]
        input_shape = resolve_dynamic_shape(declared.shape, self._dynamic_profile(declared))
        try:
            if input_shape != declared.shape:
                self._io.set_input_shape(declared, input_shape)
        except ValueError as exc:
            raise ModelLoadError(str(exc), model=self._model) from exc
        shapes: list[tuple[int, ...]] = []
        for tensor in tensors:
            shape = input_shape if tensor.is_input else self._io.context_shape(tensor)
            if any(d < 0 for d in shape):
                raise ModelLoadError(
                    f"output {tensor.name} has a data-dependent shape {shape}; not supported",
                    model=self._model,
                )
            shapes.append(shape)
        self._tensors = tensors
        self._host: list[npt.NDArray[Any]] = []
        for tensor, shape in zip(tensors, shapes, strict=True):
            host = cuda.pagelocked_empty(shape, tensor.dtype)
            self._host.append(host)
            self._device_buffers.append(cuda.mem_alloc(max(1, host.nbytes)))
        try:
            self._io.bind(tensors, [int(buf) for buf in self._device_buffers])
        except ValueError as exc:
            raise ModelLoadError(str(exc), model=self._model) from exc
        self._stream = cuda.Stream()
        self._in_pos = tensors.index(declared)
        self._out_pos = [i for i, t in enumerate(tensors) if not t.is_input]
        self._input = InputSpec(
            tensor=TensorSpec(name=declared.name, shape=input_shape, dtype=declared.dtype),
            layout=guess_layout(input_shape),
        )
        self._outputs = [
            TensorSpec(name=tensors[i].name, shape=shapes[i], dtype=tensors[i].dtype)
            for i in self._out_pos
        ]

    def _dynamic_profile(self, tensor: IOTensor) -> tuple[tuple[int, ...], ...]:
        if not any(d < 0 for d in tensor.shape):
            return (tensor.shape, tensor.shape, tensor.shape)
        return self._io.profile_shapes(tensor)

    @property
    def input_spec(self) -> InputSpec:
        return self._input

    @property
    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    @property
    def runtime(self) -> RuntimeInfo:
        return self._runtime_info

    def input_buffer(self) -> npt.NDArray[np.generic]:
        """The page-locked host input: preprocess straight into it to skip one copy."""
        return self._host[self._in_pos]

    @contextmanager
    def _current(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def infer(self, tensor: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        if not self._lock.acquire(blocking=False):
            raise InferenceError("infer called concurrently from two threads", model=self._model)
        try:
            if self._closed:
                raise InferenceError("backend is closed", model=self._model)
            spec = self._input.tensor
            if tensor.shape != spec.shape or tensor.dtype != spec.dtype:
                raise InferenceError(
                    f"input is {tensor.dtype}{list(tensor.shape)}, engine wants "
                    f"{spec.dtype}{list(spec.shape)}",
                    model=self._model,
                )
            host_in = self._host[self._in_pos]
            if tensor is not host_in:
                np.copyto(host_in, tensor)
            return self._run(host_in)
        finally:
            self._lock.release()

    def _run(self, host_in: npt.NDArray[Any]) -> list[npt.NDArray[np.generic]]:
        cuda = self._cuda
        stream = self._stream
        try:
            with self._current():
                cuda.memcpy_htod_async(self._device_buffers[self._in_pos], host_in, stream)
                if not self._io.execute_async(stream.handle):
                    raise InferenceError(
                        f"TensorRT enqueue failed: {'; '.join(self._logger.errors[-3:])}",
                        model=self._model,
                    )
                for pos in self._out_pos:
                    cuda.memcpy_dtoh_async(self._host[pos], self._device_buffers[pos], stream)
                stream.synchronize()
        except cuda.Error as exc:
            raise InferenceError(f"CUDA error during inference: {exc}", model=self._model) from exc
        # The pinned outputs are overwritten by the next frame: hand out copies.
        return [self._host[pos].copy() for pos in self._out_pos]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._ctx.push()
            self._release()

    def _release(self) -> None:
        """Free GPU resources; the context must be current. Pops and detaches it."""
        for buf in self._device_buffers:
            try:
                buf.free()
            except Exception as exc:  # keep freeing the rest; a leak is better than a crash here
                log.warning("tensorrt_free_failed", error=str(exc))
        self._device_buffers = []
        # TensorRT objects must go while their context is current: context, engine, runtime.
        for attr in ("_stream", "_context", "_engine", "_trt_runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
        self._closed = True
        self._ctx.pop()
        self._ctx.detach()
