"""TensorRT backend buffer, binding and context logic against fakes of tensorrt and pycuda.

Every test runs against both API generations: the binding-index API of TensorRT
8.x and the tensor-name API of TensorRT 10.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BackendUnavailableError, InferenceError, ModelLoadError
from agent.inference.registry import BackendOptions, create_backend
from tests.support.fake_pycuda import FakeDriver, install_stack
from tests.support.fake_tensorrt import fake_engine_bytes, make_fake_tensorrt

COPY_AND_FILL = [
    {"name": "boxes", "op": "copy"},
    {"name": "scores", "op": "fill", "value": 0.25, "shape": [1, 10]},
]


@dataclass
class FakeStack:
    api: str
    driver: FakeDriver
    trt: types.ModuleType
    write_engine: Callable[..., Path]


@pytest.fixture(params=["binding-index", "tensor-name"])
def fakes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[FakeStack]:
    driver = FakeDriver(name="Orin (fake)", capability=(8, 7))
    trt = make_fake_tensorrt(request.param, driver)
    install_stack(monkeypatch, trt, driver)

    def write_engine(*args: object, **kwargs: object) -> Path:
        path = tmp_path / "model.engine"
        path.write_bytes(fake_engine_bytes(*args, **kwargs))  # type: ignore[arg-type]
        return path

    yield FakeStack(request.param, driver, trt, write_engine)
    # Whatever happened, no test may leave a context current on the test thread.
    assert driver.stack() == []


def load(fakes: FakeStack, *args: object, **kwargs: object):
    from agent.inference.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(fakes.write_engine(*args, **kwargs), BackendOptions())


def test_specs_and_runtime_from_a_static_engine(fakes: FakeStack) -> None:
    backend = load(fakes, (1, 3, 4, 5), COPY_AND_FILL)
    spec = backend.input_spec
    assert spec.tensor.name == "images"
    assert spec.tensor.shape == (1, 3, 4, 5)
    assert spec.tensor.dtype == np.float32
    assert spec.layout == "nchw"
    assert (spec.height, spec.width) == (4, 5)
    assert [(o.name, o.shape, o.dtype) for o in backend.output_specs] == [
        ("boxes", (1, 3, 4, 5), np.dtype(np.float32)),
        ("scores", (1, 10), np.dtype(np.float32)),
    ]
    assert backend.runtime.name == "tensorrt"
    assert backend.runtime.version == fakes.trt.__version__
    assert backend.runtime.device == "cuda:0 (Orin (fake))"
    assert backend.runtime.extra == {"compute_capability": "8.7", "api": fakes.api}
    backend.close()


def test_infer_runs_copy_enqueue_copy_sync_and_returns_owned_copies(fakes: FakeStack) -> None:
    backend = load(fakes, (1, 3, 4, 5), COPY_AND_FILL)
    rng = np.random.default_rng(7)
    first_in = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    fakes.driver.ops.clear()
    boxes, scores = backend.infer(first_in)
    ops = [op[0] for op in fakes.driver.ops]
    assert ops == ["htod", "kernel_copy", "kernel_fill", "dtoh", "dtoh", "sync"]
    np.testing.assert_array_equal(boxes, first_in)
    np.testing.assert_array_equal(scores, np.full((1, 10), 0.25, dtype=np.float32))

    second_in = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    boxes2, _ = backend.infer(second_in)
    np.testing.assert_array_equal(boxes2, second_in)
    # The first result is the caller's: the next frame did not overwrite it.
    np.testing.assert_array_equal(boxes, first_in)
    pinned_ids = {id(a) for a in fakes.driver.pinned}
    assert id(boxes) not in pinned_ids
    assert id(boxes2) not in pinned_ids
    backend.close()


def test_input_buffer_is_pinned_and_used_without_an_extra_copy(fakes: FakeStack) -> None:
    backend = load(fakes, (1, 8, 8, 3), [{"name": "out", "op": "copy"}], dtype="uint8")
    buffer = backend.input_buffer()
    assert any(buffer is pinned for pinned in fakes.driver.pinned)
    assert backend.input_spec.layout == "nhwc"
    assert buffer.shape == (1, 8, 8, 3)
    assert buffer.dtype == np.uint8
    buffer[:] = np.arange(192, dtype=np.uint8).reshape(1, 8, 8, 3)
    (out,) = backend.infer(buffer)
    np.testing.assert_array_equal(out, buffer)
    assert out.dtype == np.uint8
    backend.close()


def test_dynamic_input_resolved_once_from_profile_opt_with_batch_one(fakes: FakeStack) -> None:
    profile = ((1, 3, 32, 32), (4, 3, 64, 96), (8, 3, 128, 128))
    backend = load(fakes, (-1, 3, -1, -1), COPY_AND_FILL, profile=profile)
    assert backend.input_spec.tensor.shape == (1, 3, 64, 96)
    assert backend.output_specs[0].shape == (1, 3, 64, 96)
    tensor = np.ones((1, 3, 64, 96), dtype=np.float32)
    boxes, _ = backend.infer(tensor)
    np.testing.assert_array_equal(boxes, tensor)
    backend.close()


def test_dynamic_input_outside_the_profile_fails_loudly(fakes: FakeStack) -> None:
    # No opt size in the profile: the max (16x16) is chosen, which is below the minimum 32x32,
    # so TensorRT refuses it; the load must fail and release what it took.
    profile = ((1, 3, 32, 32), (1, 3, 0, 0), (1, 3, 16, 16))
    with pytest.raises(ModelLoadError, match="refused shape"):
        load(fakes, (1, 3, -1, -1), COPY_AND_FILL, profile=profile)
    assert all(ctx.detached for ctx in fakes.driver.contexts)
    assert fakes.driver.memory == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"built_for": "7.1.3"}, "not compatible with this version"),
        ({"log_error_on_load": "Error Code 6: API Usage Error"}, "API Usage Error"),
    ],
)
def test_engine_rejected_or_logged_error_is_a_model_load_error(
    fakes: FakeStack, kwargs, message
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load(fakes, (1, 3, 4, 5), COPY_AND_FILL, **kwargs)
    assert all(ctx.detached for ctx in fakes.driver.contexts)


def test_garbage_file_is_a_model_load_error(fakes: FakeStack, tmp_path: Path) -> None:
    from agent.inference.backends.tensorrt import TensorRTBackend

    path = tmp_path / "not-an-engine.engine"
    path.write_bytes(b"\x00garbage" * 8)
    with pytest.raises(ModelLoadError, match="magicTag"):
        TensorRTBackend(path, BackendOptions())
    with pytest.raises(ModelLoadError, match="cannot read"):
        TensorRTBackend(tmp_path / "missing.engine", BackendOptions())


def test_two_inputs_are_refused(fakes: FakeStack) -> None:
    with pytest.raises(ModelLoadError, match="one image input"):
        load(fakes, (1, 3, 4, 5), COPY_AND_FILL, extra_inputs=1)


def test_close_frees_every_buffer_once_and_detaches(fakes: FakeStack) -> None:
    backend = load(fakes, (1, 3, 4, 5), COPY_AND_FILL)
    allocated = set(fakes.driver.memory)
    assert len(allocated) == 3
    backend.close()
    backend.close()
    assert sorted(fakes.driver.freed) == sorted(allocated)
    assert fakes.driver.memory == {}
    assert [ctx.detached for ctx in fakes.driver.contexts] == [True]
    with pytest.raises(InferenceError, match="closed"):
        backend.infer(np.zeros((1, 3, 4, 5), dtype=np.float32))


def test_wrong_input_is_an_inference_error(fakes: FakeStack) -> None:
    backend = load(fakes, (1, 3, 4, 5), COPY_AND_FILL)
    with pytest.raises(InferenceError, match="engine wants"):
        backend.infer(np.zeros((1, 3, 5, 4), dtype=np.float32))
    with pytest.raises(InferenceError, match="engine wants"):
        backend.infer(np.zeros((1, 3, 4, 5), dtype=np.float64))
    backend.close()


def test_infer_from_a_worker_thread_pushes_and_pops_its_context(fakes: FakeStack) -> None:
    backend = load(fakes, (1, 3, 4, 5), COPY_AND_FILL)
    results: list[object] = []
    stack_after: list[int] = []

    def worker() -> None:
        tensor = np.full((1, 3, 4, 5), 3.0, dtype=np.float32)
        results.append(backend.infer(tensor)[0])
        stack_after.append(len(fakes.driver.stack()))

    thread = threading.Thread(target=worker, name="test-infer")
    thread.start()
    thread.join(timeout=10)
    np.testing.assert_array_equal(results[0], np.full((1, 3, 4, 5), 3.0, dtype=np.float32))
    assert stack_after == [0]
    backend.close()


def test_concurrent_infer_is_refused(fakes: FakeStack) -> None:
    backend = load(fakes, (1, 3, 4, 5), COPY_AND_FILL)
    with backend._lock, pytest.raises(InferenceError, match="concurrently"):
        backend.infer(np.zeros((1, 3, 4, 5), dtype=np.float32))
    backend.close()


def test_registry_creates_the_backend(fakes: FakeStack) -> None:
    path = fakes.write_engine((1, 3, 4, 5), COPY_AND_FILL)
    backend = create_backend("tensorrt", path, BackendOptions())
    assert backend.runtime.name == "tensorrt"
    backend.close()


def test_missing_device_is_backend_unavailable(fakes: FakeStack) -> None:
    from agent.inference.backends.tensorrt import TensorRTBackend

    path = fakes.write_engine((1, 3, 4, 5), COPY_AND_FILL)
    with pytest.raises(BackendUnavailableError, match="CUDA device 3"):
        TensorRTBackend(path, BackendOptions(device_index=3))


@pytest.mark.parametrize("missing", ["tensorrt", "pycuda.driver"])
def test_missing_runtime_is_backend_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str
) -> None:
    from agent.inference.backends.tensorrt import TensorRTBackend

    driver = FakeDriver()
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("tensor-name", driver))
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver.module())
    monkeypatch.setitem(sys.modules, missing, None)  # a None entry makes import raise ImportError
    with pytest.raises(BackendUnavailableError, match=missing.split(".", maxsplit=1)[0]):
        TensorRTBackend(tmp_path / "x.engine", BackendOptions())


def test_implicit_batch_engines_are_refused(fakes: FakeStack) -> None:
    with pytest.raises(ModelLoadError, match="implicit-batch"):
        load(fakes, (3, 4, 5), COPY_AND_FILL, implicit_batch=True)
    assert all(ctx.detached for ctx in fakes.driver.contexts)


def test_engine_with_several_profiles_uses_profile_zero(fakes: FakeStack) -> None:
    profile = ((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 32, 32))
    backend = load(fakes, (1, 3, -1, -1), COPY_AND_FILL, profile=profile, profiles=2)
    assert backend.input_spec.tensor.shape == (1, 3, 16, 16)
    assert [o.name for o in backend.output_specs] == ["boxes", "scores"]
    tensor = np.full((1, 3, 16, 16), 2.0, dtype=np.float32)
    boxes, scores = backend.infer(tensor)
    np.testing.assert_array_equal(boxes, tensor)
    np.testing.assert_array_equal(scores, np.full((1, 10), 0.25, dtype=np.float32))
    backend.close()
