"""Staging-time TensorRT engine build: real installer, real bundles, fake TensorRT/pycuda.

The real ``trt_build.build_engine`` runs (cache naming, atomic cache write) against
the fake ``tensorrt`` builder, whose parser reads the real ONNX file with ONNX
Runtime; the trial then loads the built engine with the real TensorRT backend.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from agent.assets import find_asset
from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.errors import Reason, UpdateError
from agent.update.engines.builder import ENGINE_PREFIX, default_engine_builder
from agent.update.store.factory import engine_builders
from agent.update.store.installer import Installer
from tests.support.fake_pycuda import FakeDriver, install_stack
from tests.support.fake_tensorrt import make_fake_tensorrt
from tests.support.fake_trt_builder import add_fake_builder
from tests.support.update_fleet import Fleet, install_bundle, make_installer, snapshot

ONNX = "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"  # dynamic [-1, 3, 48, -1] input
BUILDER = functools.partial(default_engine_builder, input_size=(48, 192))


def install_fakes(
    monkeypatch: pytest.MonkeyPatch,
    api: Literal["binding-index", "tensor-name"],
    driver: FakeDriver,
) -> types.ModuleType:
    module = add_fake_builder(make_fake_tensorrt(api, driver))
    install_stack(monkeypatch, module, driver)
    return module


@pytest.fixture(params=["tensor-name", "binding-index"])
def api(request: pytest.FixtureRequest) -> Literal["binding-index", "tensor-name"]:
    value: Literal["binding-index", "tensor-name"] = request.param
    return value


@pytest.fixture
def trt(
    monkeypatch: pytest.MonkeyPatch, api: Literal["binding-index", "tensor-name"]
) -> Iterator[types.ModuleType]:
    driver = FakeDriver(name="Orin (fake)", capability=(8, 7))
    yield install_fakes(monkeypatch, api, driver)
    assert driver.stack() == []


@pytest.fixture
def onnx_model() -> Path:
    path = find_asset(ONNX)
    assert path is not None, f"asset {ONNX} missing"
    return path


@pytest.fixture
def fleet(tmp_path: Path, onnx_model: Path) -> Fleet:
    return Fleet(tmp_path / "fleet", onnx_model)


def trt_installer(state: Path, fleet: Fleet, **kwargs: object) -> Installer:
    return make_installer(state, fleet, engine_builders={"detector": BUILDER}, **kwargs)


def test_onnx_bundle_builds_once_and_current_resolves_to_the_engine(
    tmp_path: Path, fleet: Fleet, trt: types.ModuleType, onnx_model: Path
) -> None:
    state = tmp_path / "state"
    installer = trt_installer(state, fleet)
    # The manifest names the portable "onnx" backend; the slot runs TensorRT.
    first = install_bundle(installer, fleet.bundle())
    assert first.outcome == "committed", first.detail
    assert len(trt.builds) == 1
    model = installer.store.current_model("detector")
    assert model is not None
    assert model.parent == installer.store.version_dir("detector", first.bundle_sha).resolve()
    assert model.name.startswith(ENGINE_PREFIX)
    assert model.name.endswith("-sm87-orin-fake-fp16.engine")
    assert f"-trt{trt.__version__}-" in model.name
    cached = state / "engines" / model.name.removeprefix(ENGINE_PREFIX)
    assert model.read_bytes() == cached.read_bytes()
    assert (model.parent / onnx_model.name).read_bytes() == onnx_model.read_bytes()
    info = installer.store.version_info("detector", first.bundle_sha)
    assert info is not None
    assert info["model_file"] == onnx_model.name  # the signed artifact stays the ONNX file
    assert info["engine"]["tensorrt"] == trt.__version__
    assert info["engine"]["gpu"] == "Orin (fake)"

    # Another bundle with the same ONNX file: a cache hit, no second build.
    second = install_bundle(installer, fleet.bundle(manifest_version=2, release=2))
    assert second.outcome == "committed", second.detail
    assert second.bundle_sha != first.bundle_sha
    assert len(trt.builds) == 1
    again = installer.store.current_model("detector")
    assert again is not None
    assert again != model
    assert again.name == model.name
    assert again.stat().st_ino == cached.stat().st_ino  # linked from the cache, not rebuilt


def test_resume_after_a_crash_while_staging_does_not_rebuild(
    tmp_path: Path, fleet: Fleet, trt: types.ModuleType
) -> None:
    class Crash(Exception):
        pass

    def crash(step: str) -> None:
        if step == "stage_after_rename":
            raise Crash(step)

    state = tmp_path / "state"
    bundle = fleet.bundle()
    with pytest.raises(Crash):
        install_bundle(trt_installer(state, fleet, fault=crash), bundle)
    installer = trt_installer(state, fleet)
    [result] = installer.recover()
    assert result.outcome == "committed", result.detail
    assert len(trt.builds) == 1
    model = installer.store.current_model("detector")
    assert model is not None
    assert model.name.startswith(ENGINE_PREFIX)


def test_engine_from_another_gpu_is_not_reused(
    tmp_path: Path,
    fleet: Fleet,
    trt: types.ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    api: Literal["binding-index", "tensor-name"],
) -> None:
    state = tmp_path / "state"
    assert install_bundle(trt_installer(state, fleet), fleet.bundle()).outcome == "committed"
    assert len(trt.builds) == 1
    # The same state dir on another board (e.g. a moved SD card): a fresh build, new key.
    other = install_fakes(monkeypatch, api, FakeDriver(name="Xavier (fake)", capability=(7, 2)))
    installer = trt_installer(state, fleet)
    result = install_bundle(installer, fleet.bundle(manifest_version=2, release=2))
    assert result.outcome == "committed", result.detail
    assert len(other.builds) == 1
    model = installer.store.current_model("detector")
    assert model is not None
    assert model.name.endswith("-sm72-xavier-fake-fp16.engine")
    assert len(list((state / "engines").glob("*.engine"))) == 2


@pytest.mark.parametrize("failure", ["not_onnx", "no_tensorrt"])
def test_failed_build_rejects_incompatible_and_changes_nothing(
    tmp_path: Path,
    fleet: Fleet,
    trt: types.ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    state = tmp_path / "state"
    installer = trt_installer(state, fleet)
    assert install_bundle(installer, fleet.bundle()).outcome == "committed"
    if failure == "not_onnx":
        model = tmp_path / "broken.onnx"
        model.write_bytes(b"\x08\x07" + bytes(range(256)) * 16)
        bundle = fleet.bundle(model, manifest_version=2, release=2)
    else:
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # None makes import raise
        bundle = fleet.bundle(manifest_version=2, release=2, deployment_id="d2")
    before = snapshot(state / "models"), snapshot(state / "engines")
    active = installer.store.current_model("detector")
    with pytest.raises(UpdateError) as info:
        install_bundle(installer, bundle)
    assert info.value.reason is Reason.INCOMPATIBLE, info.value
    assert "engine build failed" in str(info.value)
    assert (snapshot(state / "models"), snapshot(state / "engines")) == before
    assert installer.store.current_model("detector") == active
    entry = installer.journal.load("detector")
    assert entry.phase.value == "idle"
    assert entry.last_result == {"outcome": "rejected", "reason": "incompatible"}
    assert len(trt.builds) == 1


def test_onnx_slot_and_tflite_bundle_are_unaffected(
    tmp_path: Path, fleet: Fleet, trt: types.ModuleType, short_range_model: Path
) -> None:
    # A slot without a builder (backend onnx) keeps the ONNX file as its model.
    onnx_state = tmp_path / "onnx-state"
    installer = make_installer(onnx_state, fleet)
    assert install_bundle(installer, fleet.bundle()).outcome == "committed"
    model = installer.store.current_model("detector")
    assert model is not None
    assert model.suffix == ".onnx"
    # A TensorRT slot that receives a TFLite bundle builds nothing either.
    trt_state = tmp_path / "trt-state"
    installer = trt_installer(trt_state, fleet)
    assert install_bundle(installer, fleet.bundle(short_range_model)).outcome == "committed"
    model = installer.store.current_model("detector")
    assert model is not None
    assert model.name == short_range_model.name
    assert trt.builds == []
    assert not (onnx_state / "engines").exists()
    assert not (trt_state / "engines").exists()


def test_factory_gives_builders_to_tensorrt_slots_only() -> None:
    cfg = AgentConfig(
        models=[
            ModelConfig(slot="plates", backend="tensorrt", input_size=[192, 48]),
            ModelConfig(slot="faces", backend="tflite"),
            ModelConfig(slot="ocr", backend="onnx"),
        ]
    )
    builders = engine_builders(cfg)
    assert set(builders) == {"plates"}
    plates = builders["plates"]
    assert isinstance(plates, functools.partial)
    assert plates.keywords == {"input_size": (48, 192)}  # config [w, h] -> (h, w)
