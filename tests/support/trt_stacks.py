"""TensorRT/JetPack upgrade scenarios: stacks of fake TensorRT + GPU, and a one-slot loader.

``use_stack`` makes a (TensorRT version, API generation, GPU) importable, as a JetPack
upgrade does; engines the fake builder makes are stamped with the version, so another
version refuses them. ``Slot`` loads the slot with the real ``load_model``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import types
from pathlib import Path
from typing import Any, Literal

import pytest

from agent.config.model import ModelConfig
from agent.errors import AgentError
from agent.inference.registry import BackendOptions
from agent.pipeline.model import LoadedModel, load_model
from agent.update.engines.builder import ENGINE_PREFIX, default_engine_builder
from agent.update.store.models import ModelStore
from tests.support.fake_pycuda import FakeDriver, install_stack
from tests.support.fake_tensorrt import make_fake_tensorrt
from tests.support.fake_trt_builder import add_fake_builder
from tests.support.update_fleet import Fleet, install_bundle, make_installer

ONNX = "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"  # dynamic [-1, 3, 48, -1] input
BUILDER = functools.partial(default_engine_builder, input_size=(48, 192))
MODEL = ModelConfig(slot="detector", backend="tensorrt", decoder="classify", input_size=[192, 48])
JETPACK5 = {"version": "8.5.2.2", "gpu": "Xavier (fake)", "cc": (7, 2), "api": "binding-index"}
JETPACK6 = {"version": "10.3.0", "gpu": "Orin (fake)", "cc": (8, 7), "api": "tensor-name"}


def use_stack(
    monkeypatch: pytest.MonkeyPatch,
    stack: dict[str, Any],
    fail_build: str = "",
    hold: threading.Event | None = None,
) -> types.ModuleType:
    """Make ``stack`` the importable TensorRT + GPU (as after a JetPack upgrade)."""
    api: Literal["binding-index", "tensor-name"] = stack["api"]
    driver = FakeDriver(name=stack["gpu"], capability=stack["cc"])
    module = add_fake_builder(
        make_fake_tensorrt(api, driver, version=stack["version"]), fail_build=fail_build, hold=hold
    )
    install_stack(monkeypatch, module, driver)
    return module


class Slot:
    """The part of the pipeline the refresher drives, loading with the real ``load_model``."""

    def __init__(self, state: Path) -> None:
        self.store = ModelStore(state)
        self.loaded: LoadedModel | None = None
        self.error = ""

    def start(self) -> None:
        path = self.store.current_model("detector")
        assert path is not None
        try:
            self.reload_model("detector", path)
        except AgentError as exc:
            self.error = str(exc)

    def reload_model(self, slot: str, path: Path) -> None:
        assert slot == "detector"
        loaded = load_model(MODEL, "tensorrt", path, BackendOptions(input_size=(48, 192)))
        self.close()
        self.loaded, self.error = loaded, ""

    def model_info(self) -> dict[str, dict[str, Any]]:
        return {"detector": self.loaded.info() if self.loaded else {"error": self.error}}

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None

    # The rest of the pipeline API, for the supervisor.
    def stop(self, timeout_s: float = 10.0) -> None:
        del timeout_s
        self.close()

    def stats_snapshot(self) -> dict[str, Any]:
        return {}

    def health_snapshot(self) -> dict[str, dict[str, str]]:
        if self.loaded is None:
            return {"model:detector": {"status": "down", "detail": self.error}}
        return {"model:detector": {"status": "ok", "detail": self.loaded.path.name}}

    def last_progress_mono_s(self) -> float:
        return time.monotonic()


def installed_under(
    stack: dict[str, Any], state: Path, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> Path:
    use_stack(monkeypatch, stack)
    installer = make_installer(state, fleet, engine_builders={"detector": BUILDER})
    assert install_bundle(installer, fleet.bundle()).outcome == "committed"
    engine = installer.store.current_model("detector")
    assert engine is not None
    assert engine.name.startswith(ENGINE_PREFIX)
    return engine


def age(directory: Path, seconds: float = 3600.0) -> None:
    """Back-date every file, so the prune grace for a concurrent staging does not apply."""
    past = time.time() - seconds
    for path in directory.iterdir():
        os.utime(path, (past, past))
