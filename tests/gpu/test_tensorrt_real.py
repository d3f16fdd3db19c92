"""TensorRT backend on a real NVIDIA GPU (``pytest -m gpu``; CI deselects these).

Two levels, so that a machine with CUDA and pycuda but no TensorRT still checks
the CUDA half for real:

- real pycuda + the fake TensorRT engine: a real CUDA context, page-locked host
  buffers, device buffers, async copies and device-side work on a real stream;
- real TensorRT + real pycuda: an engine built on this GPU from the PaddleOCR
  classifier ONNX file, run through the backend and compared with ONNX Runtime.

Figures are printed (run with ``-s``), never asserted.
"""

from __future__ import annotations

import ctypes
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.assets import find_asset
from agent.inference.registry import BackendOptions
from tests.support.fake_tensorrt import fake_engine_bytes, make_fake_tensorrt

pytestmark = pytest.mark.gpu


class LibcudaOps:
    """The fake engine's device work through the real driver API, on the caller's stream."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL("libcuda.so.1")
        self._lib.cuMemcpyDtoDAsync_v2.argtypes = [
            ctypes.c_uint64,
            ctypes.c_uint64,
            ctypes.c_size_t,
            ctypes.c_void_p,
        ]
        self._lib.cuMemsetD32Async.argtypes = [
            ctypes.c_uint64,
            ctypes.c_uint,
            ctypes.c_size_t,
            ctypes.c_void_p,
        ]

    def dtod(self, dst: int, src: int, nbytes: int, stream_handle: int) -> None:
        assert self._lib.cuMemcpyDtoDAsync_v2(dst, src, nbytes, stream_handle) == 0

    def memset32(self, dst: int, value: int, count: int, stream_handle: int) -> None:
        assert self._lib.cuMemsetD32Async(dst, value, count, stream_handle) == 0


def timed(backend, tensor: np.ndarray, runs: int) -> tuple[float, float]:
    for _ in range(10):
        backend.infer(tensor)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        backend.infer(tensor)
        samples.append((time.perf_counter() - started) * 1000)
    return float(np.mean(samples)), float(np.percentile(samples, 95))


@pytest.fixture(params=["binding-index", "tensor-name"])
def fake_trt_real_cuda(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("pycuda.driver")
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(request.param, LibcudaOps()))
    return str(request.param)


def test_real_pycuda_buffers_stream_and_context(fake_trt_real_cuda: str, tmp_path: Path) -> None:
    import pycuda.driver as cuda

    from agent.inference.backends.tensorrt import TensorRTBackend

    engine = tmp_path / "fake.engine"
    engine.write_bytes(
        fake_engine_bytes(
            (1, 3, 640, 640),
            [
                {"name": "copy", "op": "copy"},
                {"name": "fill", "op": "fill", "value": 0.5, "shape": [1, 1000]},
            ],
        )
    )
    backend = TensorRTBackend(engine, BackendOptions())
    try:
        buffer = backend.input_buffer()
        print(f"\n[{fake_trt_real_cuda}] input buffer base: {type(buffer.base).__name__}")
        assert "HostAllocation" in type(buffer.base).__name__  # page-locked, from pycuda
        rng = np.random.default_rng(1)
        buffer[:] = rng.standard_normal(buffer.shape, dtype=np.float32)
        copy, fill = backend.infer(buffer)
        np.testing.assert_array_equal(copy, buffer)
        np.testing.assert_array_equal(fill, np.full((1, 1000), 0.5, dtype=np.float32))
        # No context is left current on this thread between calls.
        assert cuda.Context.get_current() is None
        mean, p95 = timed(backend, buffer, 200)
        print(
            f"[{fake_trt_real_cuda}] {backend.runtime.device}: 1x3x640x640 float32 "
            f"H2D + device copy + D2H + sync: mean {mean:.3f} ms, p95 {p95:.3f} ms"
        )
    finally:
        backend.close()


def test_real_tensorrt_engine_matches_onnxruntime(tmp_path: Path) -> None:
    trt = pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda.driver")
    ort = pytest.importorskip("onnxruntime")
    from agent.inference.backends.tensorrt import TensorRTBackend
    from agent.inference.trt_build import build_engine

    onnx_path = find_asset("models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    assert onnx_path is not None
    started = time.perf_counter()
    engine = build_engine(onnx_path, tmp_path / "cache", input_size=(48, 192), fp16=False)
    seconds = time.perf_counter() - started
    print(f"\nTensorRT {trt.__version__}: built {engine.name} in {seconds:.1f} s")
    assert build_engine(onnx_path, tmp_path / "cache", input_size=(48, 192), fp16=False) == engine
    backend = TensorRTBackend(engine, BackendOptions())
    try:
        assert backend.input_spec.tensor.shape == (1, 3, 48, 192)
        rng = np.random.default_rng(2)
        buffer = backend.input_buffer()
        buffer[:] = rng.uniform(-1, 1, buffer.shape).astype(np.float32)
        (probs,) = backend.infer(buffer)
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        (want,) = session.run(None, {"x": np.array(buffer)})
        np.testing.assert_allclose(probs, want, atol=2e-3)
        mean, p95 = timed(backend, buffer, 500)
        print(f"{backend.runtime.device} cls 1x3x48x192 fp32: mean {mean:.3f} ms, p95 {p95:.3f} ms")
    finally:
        backend.close()


def test_device_facts_on_a_gpu_machine() -> None:
    pytest.importorskip("pycuda.driver")
    from agent.inference import devicefacts

    facts = devicefacts.collect()
    print(f"\ndevice facts: {facts}")
    assert facts["accelerator"] in {"nvidia-gpu", "jetson-gpu"}
    assert facts["gpu"]
    major, minor = facts["compute_capability"].split(".")
    assert int(major) >= 5
    assert minor.isdigit()
