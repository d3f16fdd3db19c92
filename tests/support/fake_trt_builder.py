"""The builder half of the fake ``tensorrt`` module: ``Builder``, ``OnnxParser`` and friends.

``add_fake_builder(trt)`` adds what ``agent.inference.trt_build`` calls to a module
made by ``make_fake_tensorrt``. The parser reads the real ONNX file with ONNX
Runtime (so a file that is not ONNX is refused, with parser errors, as TensorRT
would), dynamic dims come back as -1, and ``build_serialized_network`` returns a
fake engine (``fake_engine_bytes``) with the resolved input shape and one constant
output per ONNX output, stamped with the module's ``__version__``, which the fake
``Runtime`` of that version then deserializes and runs (another version refuses it).
``trt.builds`` counts the engines built.
"""

from __future__ import annotations

import enum
import threading
import types
from typing import Any

from tests.support.fake_tensorrt import Severity, fake_engine_bytes


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0


class BuilderFlag(enum.IntEnum):
    FP16 = 0


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class _Input:
    def __init__(self, name: str, shape: list[int]) -> None:
        self.name = name
        self.shape = tuple(shape)


class _Network:
    def __init__(self) -> None:
        self.inputs: list[_Input] = []
        self.outputs: list[tuple[str, list[int]]] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> _Input:
        return self.inputs[index]


def _dims(shape: list[Any]) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


class _Parser:
    def __init__(self, network: _Network, logger: Any) -> None:
        self.network = network
        self.logger = logger
        self.errors: list[str] = []

    def parse(self, data: bytes) -> bool:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as exc:  # any refusal becomes a parser error, as in TensorRT
            self.errors.append(f"ModelImporter.cpp: failed to parse ONNX model: {exc}")
            return False
        self.network.inputs = [_Input(i.name, _dims(i.shape)) for i in session.get_inputs()]
        self.network.outputs = [(o.name, _dims(o.shape)) for o in session.get_outputs()]
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        assert tuple(lo) == tuple(opt) == tuple(hi), "trt_build makes one-shape profiles"
        self.shapes[name] = tuple(int(d) for d in opt)


class _Config:
    def __init__(self) -> None:
        self.flags: set[BuilderFlag] = set()
        self.workspace_bytes = 0
        self.profiles: list[_Profile] = []

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        assert pool is MemoryPoolType.WORKSPACE
        self.workspace_bytes = size

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


def add_fake_builder(
    trt: types.ModuleType, *, fail_build: str = "", hold: threading.Event | None = None
) -> types.ModuleType:
    """Give ``trt`` a builder; ``fail_build`` makes every build log that error and return None.

    ``hold``: every build waits for it (a build that takes minutes on a Jetson).
    """
    builds: list[str] = []

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> _Network:
            del flags
            return _Network()

        def create_builder_config(self) -> _Config:
            return _Config()

        def create_optimization_profile(self) -> _Profile:
            return _Profile()

        def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
            if hold is not None:
                hold.wait(30.0)
            if fail_build:
                self.logger.log(Severity.ERROR, fail_build)
                return None
            resolved = config.profiles[0].shapes if config.profiles else {}
            first = network.inputs[0]
            shape = resolved.get(first.name, first.shape)
            if any(d < 0 for d in shape):
                message = f"{first.name}: dynamic dims without a profile"
                self.logger.log(Severity.ERROR, message)
                return None
            outputs = [
                {"name": name, "op": "fill", "value": 0.5, "shape": [max(d, 1) for d in dims]}
                for name, dims in network.outputs
            ]
            builds.append(first.name)
            # Stamped with this TensorRT's version: another version refuses to deserialize it.
            return fake_engine_bytes(
                tuple(shape), outputs, input_name=first.name, built_for=trt.__version__
            )

    trt.Builder = Builder  # type: ignore[attr-defined]
    trt.OnnxParser = _Parser  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag  # type: ignore[attr-defined]
    trt.BuilderFlag = BuilderFlag  # type: ignore[attr-defined]
    trt.MemoryPoolType = MemoryPoolType  # type: ignore[attr-defined]
    trt.builds = builds  # type: ignore[attr-defined]  # test hook: engines built
    return trt
