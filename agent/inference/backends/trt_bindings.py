"""The two TensorRT Python API generations behind one small interface.

- Binding-index API (TensorRT 7/8, JetPack 4/5): ``engine.num_bindings``,
  ``get_binding_*``, ``context.set_binding_shape`` and ``execute_async_v2`` with a
  list of device pointers in binding order.
- Tensor-name API (TensorRT 8.5+, the only one in TensorRT 10 / JetPack 6):
  ``engine.num_io_tensors``, ``get_tensor_*``, ``context.set_input_shape``,
  ``set_tensor_address`` and ``execute_async_v3``.

The tensor-name API is preferred whenever the engine has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

ApiKind = Literal["binding-index", "tensor-name"]


@dataclass(frozen=True, slots=True)
class IOTensor:
    name: str
    index: int  # binding index (binding API) or I/O tensor order (tensor-name API)
    is_input: bool
    shape: tuple[int, ...]  # as declared by the engine; -1 marks a dynamic dim
    dtype: np.dtype[np.generic]


class EngineIO(Protocol):
    kind: ApiKind

    def tensors(self) -> list[IOTensor]: ...

    def profile_shapes(self, tensor: IOTensor) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) of optimisation profile 0."""
        ...

    def set_input_shape(self, tensor: IOTensor, shape: tuple[int, ...]) -> None: ...

    def context_shape(self, tensor: IOTensor) -> tuple[int, ...]: ...

    def bind(self, tensors: list[IOTensor], addresses: list[int]) -> None:
        """Record the device address of every I/O tensor (once, at load)."""
        ...

    def execute_async(self, stream_handle: int) -> bool: ...


def _shape(dims: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in dims)


def _np_dtype(trt: Any, trt_dtype: Any) -> np.dtype[np.generic]:
    dtype: np.dtype[np.generic] = np.dtype(trt.nptype(trt_dtype))
    return dtype


class TensorNameIO:
    kind: ApiKind = "tensor-name"

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self._trt = trt
        self._engine = engine
        self._context = context

    def tensors(self) -> list[IOTensor]:
        result = []
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            mode = self._engine.get_tensor_mode(name)
            result.append(
                IOTensor(
                    name=name,
                    index=index,
                    is_input=mode == self._trt.TensorIOMode.INPUT,
                    shape=_shape(self._engine.get_tensor_shape(name)),
                    dtype=_np_dtype(self._trt, self._engine.get_tensor_dtype(name)),
                )
            )
        return result

    def profile_shapes(self, tensor: IOTensor) -> tuple[tuple[int, ...], ...]:
        shapes = self._engine.get_tensor_profile_shape(tensor.name, 0)
        return tuple(_shape(s) for s in shapes)

    def set_input_shape(self, tensor: IOTensor, shape: tuple[int, ...]) -> None:
        if not self._context.set_input_shape(tensor.name, shape):
            raise ValueError(f"TensorRT refused shape {shape} for input {tensor.name}")

    def context_shape(self, tensor: IOTensor) -> tuple[int, ...]:
        return _shape(self._context.get_tensor_shape(tensor.name))

    def bind(self, tensors: list[IOTensor], addresses: list[int]) -> None:
        for tensor, address in zip(tensors, addresses, strict=True):
            if not self._context.set_tensor_address(tensor.name, address):
                raise ValueError(f"TensorRT refused the address of {tensor.name}")

    def execute_async(self, stream_handle: int) -> bool:
        return bool(self._context.execute_async_v3(stream_handle))


class BindingIndexIO:
    kind: ApiKind = "binding-index"

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self._trt = trt
        self._engine = engine
        self._context = context
        self._bindings: list[int] = [0] * int(engine.num_bindings)
        # With several optimisation profiles, bindings repeat per profile; profile 0 comes first.
        profiles = max(1, int(getattr(engine, "num_optimization_profiles", 1)))
        self._per_profile = int(engine.num_bindings) // profiles

    def tensors(self) -> list[IOTensor]:
        return [
            IOTensor(
                name=self._engine.get_binding_name(index),
                index=index,
                is_input=bool(self._engine.binding_is_input(index)),
                shape=_shape(self._engine.get_binding_shape(index)),
                dtype=_np_dtype(self._trt, self._engine.get_binding_dtype(index)),
            )
            for index in range(self._per_profile)
        ]

    def profile_shapes(self, tensor: IOTensor) -> tuple[tuple[int, ...], ...]:
        shapes = self._engine.get_profile_shape(0, tensor.index)
        return tuple(_shape(s) for s in shapes)

    def set_input_shape(self, tensor: IOTensor, shape: tuple[int, ...]) -> None:
        if not self._context.set_binding_shape(tensor.index, shape):
            raise ValueError(f"TensorRT refused shape {shape} for input {tensor.name}")

    def context_shape(self, tensor: IOTensor) -> tuple[int, ...]:
        return _shape(self._context.get_binding_shape(tensor.index))

    def bind(self, tensors: list[IOTensor], addresses: list[int]) -> None:
        for tensor, address in zip(tensors, addresses, strict=True):
            self._bindings[tensor.index] = address

    def execute_async(self, stream_handle: int) -> bool:
        return bool(
            self._context.execute_async_v2(bindings=self._bindings, stream_handle=stream_handle)
        )


def engine_io(trt: Any, engine: Any, context: Any) -> EngineIO:
    if hasattr(engine, "num_io_tensors"):
        return TensorNameIO(trt, engine, context)
    return BindingIndexIO(trt, engine, context)


def resolve_dynamic_shape(
    declared: tuple[int, ...], profile: tuple[tuple[int, ...], ...]
) -> tuple[int, ...]:
    """Input shape for a dynamic engine: profile 0's opt (max where opt is unset), batch 1.

    Batch 1 only if the profile allows it; otherwise its minimum batch.
    """
    if not any(d < 0 for d in declared):
        return declared
    minimum, opt, maximum = profile
    shape = [
        d if d >= 0 else (o if o > 0 else m) for d, o, m in zip(declared, opt, maximum, strict=True)
    ]
    if declared[0] < 0:
        shape[0] = max(1, minimum[0])
    return tuple(shape)
