"""A small stand-in for the ``tensorrt`` module, in either API generation.

``make_fake_tensorrt("binding-index")`` looks like TensorRT 8.x on JetPack 4/5
(``num_bindings``, ``get_binding_*``, ``set_binding_shape``, ``execute_async_v2``
with a bindings list; no tensor-name API). ``make_fake_tensorrt("tensor-name")``
looks like TensorRT 10 (``num_io_tensors``, ``get_tensor_*``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``; no binding API).

A fake "engine" is JSON made by ``fake_engine_bytes``: one input (shape may hold
-1 with an optimisation profile) and outputs that are either a ``copy`` of the
input or a ``fill`` with a constant float32. Execution enqueues device work on
the caller's stream through ``device_ops`` (``dtod``/``memset32`` by raw
handle), so with the fake pycuda nothing happens until the stream is
synchronized, and with real pycuda the same engine drives real CUDA copies.
"""

from __future__ import annotations

import enum
import json
import types
from typing import Any, Literal, Protocol

import numpy as np

MAGIC = "FAKE-TRT-ENGINE"


class DeviceOps(Protocol):
    def dtod(self, dst: int, src: int, nbytes: int, stream_handle: int) -> None: ...

    def memset32(self, dst: int, value: int, count: int, stream_handle: int) -> None: ...


def fake_engine_bytes(
    input_shape: tuple[int, ...],
    outputs: list[dict[str, Any]],
    *,
    input_name: str = "images",
    dtype: str = "float32",
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None,
    built_for: str | None = None,
    log_error_on_load: str = "",
    extra_inputs: int = 0,
    implicit_batch: bool = False,
    profiles: int = 1,
) -> bytes:
    """Serialized fake engine.

    outputs: ``{"name", "op": "copy"}`` or ``{"name", "op": "fill", "value", "shape"}``.
    """
    spec = {
        "magic": MAGIC,
        "input": {"name": input_name, "shape": list(input_shape), "dtype": dtype},
        "profile": [list(s) for s in profile] if profile else None,
        "outputs": outputs,
        "built_for": built_for,
        "log_error_on_load": log_error_on_load,
        "extra_inputs": extra_inputs,
        "implicit_batch": implicit_batch,
        "profiles": profiles,
    }
    return json.dumps(spec).encode()


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity: Severity, msg: str) -> None:
        raise NotImplementedError


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT8 = "int8"
    INT32 = "int32"
    BOOL = "bool"
    UINT8 = "uint8"


def nptype(dtype: DataType) -> type[np.generic]:
    return np.dtype(dtype.value).type


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class _Tensor:
    def __init__(
        self, name: str, shape: list[int], dtype: str, *, is_input: bool, spec: dict[str, Any]
    ) -> None:
        self.name = name
        self.shape = tuple(shape)
        self.dtype = DataType(dtype)
        self.is_input = is_input
        self.spec = spec


class _EngineCore:
    def __init__(self, spec: dict[str, Any], logger: ILogger, device_ops: DeviceOps) -> None:
        self.spec = spec
        self.logger = logger
        self.device_ops = device_ops
        inp = spec["input"]
        self.tensors = [_Tensor(inp["name"], inp["shape"], inp["dtype"], is_input=True, spec=inp)]
        for extra in range(spec["extra_inputs"]):
            self.tensors.append(_Tensor(f"extra{extra}", [1], "float32", is_input=True, spec={}))
        for out in spec["outputs"]:
            shape = out.get("shape", inp["shape"]) if out["op"] == "fill" else inp["shape"]
            self.tensors.append(
                _Tensor(
                    out["name"],
                    shape,
                    out.get("dtype", inp["dtype"]) if out["op"] == "copy" else "float32",
                    is_input=False,
                    spec=out,
                )
            )
        self.profile = spec["profile"]


class _ContextCore:
    def __init__(self, core: _EngineCore) -> None:
        self.core = core
        self.input_shape: tuple[int, ...] | None = None
        inp = core.tensors[0]
        if all(d >= 0 for d in inp.shape):
            self.input_shape = inp.shape
        self.addresses: dict[str, int] = {}
        self.executions = 0

    def set_shape(self, shape: tuple[int, ...]) -> bool:
        profile = self.core.profile
        if profile is None or len(shape) != len(profile[0]):
            self.core.logger.log(
                Severity.ERROR, "setInputShape: engine has no profile for this input"
            )
            return False
        lo, hi = profile[0], profile[2]
        if not all(a <= d <= b for a, d, b in zip(lo, shape, hi, strict=True)):
            message = f"setInputShape: {shape} outside profile [{lo}, {hi}]"
            self.core.logger.log(Severity.ERROR, message)
            return False
        self.input_shape = tuple(shape)
        return True

    def shape_of(self, tensor: _Tensor) -> tuple[int, ...]:
        if tensor.is_input:
            return (
                self.input_shape
                if tensor is self.core.tensors[0] and self.input_shape
                else tensor.shape
            )
        if tensor.spec["op"] == "copy":
            return self.input_shape or tensor.shape
        return tensor.shape

    def execute(self, stream_handle: int) -> bool:
        core = self.core
        if self.input_shape is None:
            core.logger.log(Severity.ERROR, "enqueue: input shape not specified")
            return False
        missing = [t.name for t in core.tensors if t.name not in self.addresses]
        if missing:
            message = f"enqueue: no address for {missing}"
            core.logger.log(Severity.ERROR, message)
            return False
        inp = core.tensors[0]
        in_bytes = int(np.prod(self.input_shape)) * np.dtype(inp.dtype.value).itemsize
        for tensor in core.tensors:
            if tensor.is_input:
                continue
            dst = self.addresses[tensor.name]
            if tensor.spec["op"] == "copy":
                core.device_ops.dtod(dst, self.addresses[inp.name], in_bytes, stream_handle)
            else:
                bits = int(np.array([tensor.spec["value"]], dtype=np.float32).view(np.uint32)[0])
                core.device_ops.memset32(dst, bits, int(np.prod(tensor.shape)), stream_handle)
        self.executions += 1
        return True


def make_fake_tensorrt(
    api: Literal["binding-index", "tensor-name"],
    device_ops: DeviceOps,
    version: str | None = None,
) -> types.ModuleType:
    """A module object to install as ``sys.modules["tensorrt"]``."""
    trt_version = version or ("8.5.2.2" if api == "binding-index" else "10.3.0")
    mod = types.ModuleType("tensorrt")
    mod.__version__ = trt_version  # type: ignore[attr-defined]
    mod.ILogger = ILogger  # type: ignore[attr-defined]
    mod.DataType = DataType  # type: ignore[attr-defined]
    mod.nptype = nptype  # type: ignore[attr-defined]
    created: list[Any] = []
    mod.created = created  # type: ignore[attr-defined]  # test hook: contexts made
    if api == "tensor-name":
        mod.TensorIOMode = TensorIOMode  # type: ignore[attr-defined]

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            if not isinstance(logger, ILogger):
                raise TypeError("Runtime() needs an ILogger")
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            try:
                spec = json.loads(data)
                assert spec["magic"] == MAGIC
            except Exception:
                self.logger.log(
                    Severity.ERROR,
                    "1: [runtime.cpp::parsePlan::314] Error Code 1: Serialization (Serialization "
                    "assertion plan->header.magicTag == rt::kPLAN_MAGIC_TAG failed.)",
                )
                return None
            if spec["built_for"] and spec["built_for"] != trt_version:
                message = (
                    "Serialization (The engine plan file is not compatible with this version of "
                    f"TensorRT, expecting library version {trt_version} got {spec['built_for']})"
                )
                self.logger.log(Severity.ERROR, message)
                return None
            if spec["log_error_on_load"]:
                self.logger.log(Severity.ERROR, spec["log_error_on_load"])
            core = _EngineCore(spec, self.logger, device_ops)
            return TensorEngine(core) if api == "tensor-name" else BindingEngine(core)

    class TensorEngine:
        def __init__(self, core: _EngineCore) -> None:
            self._core = core
            self.has_implicit_batch_dimension = bool(core.spec["implicit_batch"])
            self.num_optimization_profiles = int(core.spec["profiles"])
            self.num_io_tensors = len(core.tensors)

        def _t(self, name: str) -> _Tensor:
            return next(t for t in self._core.tensors if t.name == name)

        def get_tensor_name(self, index: int) -> str:
            return self._core.tensors[index].name

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if self._t(name).is_input else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._t(name).shape

        def get_tensor_dtype(self, name: str) -> DataType:
            return self._t(name).dtype

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            assert profile_index == 0
            return [tuple(s) for s in self._core.profile]

        def create_execution_context(self) -> Any:
            ctx = TensorContext(_ContextCore(self._core))
            created.append(ctx)
            return ctx

    class TensorContext:
        def __init__(self, core: _ContextCore) -> None:
            self.core = core

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            return self.core.set_shape(tuple(shape))

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.core.shape_of(next(t for t in self.core.core.tensors if t.name == name))

        def set_tensor_address(self, name: str, address: int) -> bool:
            if not isinstance(address, int):
                raise TypeError("address must be an int")
            self.core.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            return self.core.execute(stream_handle)

    class BindingEngine:
        def __init__(self, core: _EngineCore) -> None:
            self._core = core
            self.has_implicit_batch_dimension = bool(core.spec["implicit_batch"])
            # TensorRT 8 repeats every binding once per optimisation profile.
            self.num_optimization_profiles = int(core.spec["profiles"])
            self.num_bindings = len(core.tensors) * self.num_optimization_profiles

        def _profile0(self, index: int) -> _Tensor:
            # Bindings of profiles > 0 are named "<name> [profile N]" by TensorRT.
            return self._core.tensors[index % len(self._core.tensors)]

        def get_binding_name(self, index: int) -> str:
            profile = index // len(self._core.tensors)
            name = self._profile0(index).name
            return f"{name} [profile {profile}]" if profile else name

        def binding_is_input(self, index: int) -> bool:
            return self._profile0(index).is_input

        def get_binding_shape(self, index: int) -> tuple[int, ...]:
            return self._profile0(index).shape

        def get_binding_dtype(self, index: int) -> DataType:
            return self._profile0(index).dtype

        def get_profile_shape(
            self, profile_index: int, binding: int
        ) -> tuple[tuple[int, ...], ...]:
            assert profile_index == 0
            assert self._core.tensors[binding].is_input
            return tuple(tuple(s) for s in self._core.profile)

        def create_execution_context(self) -> Any:
            ctx = BindingContext(_ContextCore(self._core))
            created.append(ctx)
            return ctx

    class BindingContext:
        def __init__(self, core: _ContextCore) -> None:
            self.core = core

        def set_binding_shape(self, index: int, shape: tuple[int, ...]) -> bool:
            assert index == 0
            return self.core.set_shape(tuple(shape))

        def get_binding_shape(self, index: int) -> tuple[int, ...]:
            return self.core.shape_of(self.core.core.tensors[index])

        def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
            tensors = self.core.core.tensors
            if len(bindings) != len(tensors) * int(self.core.core.spec["profiles"]):
                self.core.core.logger.log(Severity.ERROR, "enqueueV2: wrong number of bindings")
                return False
            for tensor, ptr in zip(tensors, bindings[: len(tensors)], strict=True):
                if ptr:
                    self.core.addresses[tensor.name] = ptr
            return self.core.execute(stream_handle)

    mod.Runtime = Runtime  # type: ignore[attr-defined]
    return mod
