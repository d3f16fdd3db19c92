"""Engine cache naming for on-device builds (the build itself runs in tests/gpu)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.fsutil import sha256_file
from agent.inference.trt_build import BuildTarget, engine_cache_name


def test_cache_name_changes_with_every_part_of_the_key() -> None:
    sha = "ab" * 32
    base = BuildTarget("10.3.0", "Orin", "8.7")
    names = {
        engine_cache_name(sha, base),
        engine_cache_name("cd" * 32, base),
        engine_cache_name(sha, BuildTarget("8.5.2.2", "Orin", "8.7")),
        engine_cache_name(sha, BuildTarget("10.3.0", "Xavier", "7.2")),
        engine_cache_name(sha, BuildTarget("10.3.0", "Orin", "8.7", fp16=False)),
    }
    assert len(names) == 5
    assert engine_cache_name(sha, base) == "abababababababab-trt10.3.0-sm87-orin-fp16.engine"


def test_cache_name_is_filesystem_safe() -> None:
    name = engine_cache_name("0" * 64, BuildTarget("10.3.0", "NVIDIA H100 80GB HBM3", "9.0"))
    assert "/" not in name
    assert " " not in name
    assert name.endswith("-nvidia-h100-80gb-hbm3-fp16.engine")


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
