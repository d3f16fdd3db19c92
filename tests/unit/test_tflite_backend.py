"""The LiteRT backend on the real sample models."""

from __future__ import annotations

import numpy as np
import pytest

from agent.errors import ModelLoadError
from agent.inference.backends.tflite import TfliteBackend
from agent.inference.registry import BackendOptions, create_backend


def test_loads_and_describes_the_model(short_range_model):
    backend = create_backend("tflite", short_range_model, BackendOptions(threads=1))
    try:
        spec = backend.input_spec
        assert spec.tensor.shape == (1, 128, 128, 3)
        assert spec.layout == "nhwc"
        assert (spec.width, spec.height) == (128, 128)
        assert [s.shape for s in backend.output_specs] == [(1, 896, 16), (1, 896, 1)]
        assert backend.runtime.name in ("ai-edge-litert", "tflite-runtime")
        assert backend.runtime.version
        buffer = backend.input_buffer()
        assert buffer.shape == spec.tensor.shape
        assert buffer.dtype == np.float32
    finally:
        backend.close()


def test_outputs_are_copies_owned_by_the_caller(short_range_model):
    backend = TfliteBackend(short_range_model, BackendOptions(threads=1))
    tensor = backend.input_buffer()
    tensor.fill(-1.0)
    first = backend.infer(tensor)
    kept = [o.copy() for o in first]
    tensor.fill(1.0)
    second = backend.infer(tensor)  # would raise if a view of the first were still held
    assert all(np.array_equal(a, b) for a, b in zip(first, kept, strict=True))
    assert not np.array_equal(first[1], second[1])
    backend.close()


def test_corrupt_and_missing_files_are_model_load_errors(tmp_path, short_range_model):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(short_range_model.read_bytes()[:5000])
    with pytest.raises(ModelLoadError):
        TfliteBackend(corrupt, BackendOptions())
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all" * 100)
    with pytest.raises(ModelLoadError):
        TfliteBackend(garbage, BackendOptions())
    with pytest.raises(ModelLoadError):
        TfliteBackend(tmp_path / "missing.tflite", BackendOptions())


def test_xnnpack_banner_is_not_printed(short_range_model, capfd):
    TfliteBackend(short_range_model, BackendOptions(threads=1)).close()
    captured = capfd.readouterr()
    assert "XNNPACK" not in captured.err
