"""Installed TensorRT engines across a TensorRT/JetPack upgrade: rebuilt, loaded, pruned later.

Real installer, real signed bundles, real files; TensorRT and pycuda are the fakes
(another TensorRT version refuses a fake engine, as TensorRT does). The slot is loaded
with the real ``load_model`` and the real TensorRT backend.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.assets import find_asset
from agent.config.root import AgentConfig
from agent.diag.inference import check_model_local
from agent.update.engines.builder import ENGINE_PREFIX
from agent.update.engines.cache import PruningInstaller, runtime_target
from agent.update.engines.refresh import EngineRefresher, start_engine_refresh
from agent.update.store.factory import build_installer
from agent.update.store.probe import OfflineProbe
from tests.support.trt_stacks import (
    BUILDER,
    JETPACK5,
    JETPACK6,
    MODEL,
    ONNX,
    Slot,
    age,
    installed_under,
    use_stack,
)
from tests.support.update_fleet import FACTS, Fleet, install_bundle, snapshot


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    path = find_asset(ONNX)
    assert path is not None, f"asset {ONNX} missing"
    return Fleet(tmp_path / "fleet", path)


@pytest.fixture
def slot(tmp_path: Path) -> Iterator[Slot]:
    loader = Slot(tmp_path / "state")
    yield loader
    loader.close()


def refresher_for(state: Path, slot: Slot, builder: Any = BUILDER) -> EngineRefresher:
    runtime = runtime_target()
    assert runtime is not None
    return EngineRefresher(state, {"detector": builder}, slot, threading.Event(), runtime)


def test_upgrade_rebuilds_from_the_verified_onnx_and_prunes_the_old_engine_later(
    tmp_path: Path,
    fleet: Fleet,
    slot: Slot,
    monkeypatch: pytest.MonkeyPatch,
    log_events: list[dict[str, Any]],
) -> None:
    state = tmp_path / "state"
    old_engine = installed_under(JETPACK5, state, fleet, monkeypatch)
    models_before = snapshot(state / "models")
    trt = use_stack(monkeypatch, JETPACK6)  # the JetPack upgrade

    slot.start()  # start-up: the engine another TensorRT built cannot load
    assert slot.loaded is None
    assert "built for TensorRT 8.5.2.2 on Xavier (fake) (sm72)" in slot.error
    assert "TensorRT 10.3.0 on Orin (fake) (sm87)" in slot.error
    seen: list[dict[str, dict[str, str]]] = []

    def builder(onnx: Path, cache: Path) -> Path:
        seen.append(refresher.health())  # what health and diag report during the build
        return BUILDER(onnx, cache)

    refresher = refresher_for(state, slot, builder)
    refresher.run()

    assert len(trt.builds) == 1
    [during] = seen
    assert during["model:detector"]["status"] == "degraded"
    assert "rebuilding the TensorRT engine" in during["model:detector"]["detail"]
    assert refresher.health() == {}
    assert slot.loaded is not None
    assert slot.loaded.backend.runtime.version == "10.3.0"
    rebuilt = slot.loaded.path
    assert rebuilt.parent == state / "engines"
    assert rebuilt.name.endswith("-trt10.3.0-sm87-orin-fake-fp16.engine")
    assert snapshot(state / "models") == models_before  # signed files and pointers untouched
    [event] = [e for e in log_events if e["event"] == "trt_engine_rebuilt"]
    assert event["old"] == "TensorRT 8.5.2.2 on Xavier (fake) (sm72)"
    assert event["new"] == "TensorRT 10.3.0 on Orin (fake) (sm87)"
    assert event["engine"] == rebuilt.name

    # A restart loads the cached rebuild at once: no second build, nothing left to do.
    slot.close()
    slot.start()
    assert slot.loaded is not None
    assert slot.loaded.path == rebuilt
    refresher_for(state, slot).run()
    assert len(trt.builds) == 1

    # The old engine stays while a version dir links it; once gc removes that dir, it goes.
    old_cached = state / "engines" / old_engine.name.removeprefix(ENGINE_PREFIX)
    installer = PruningInstaller(
        state,
        provisioned_root=fleet.root_path,
        facts=FACTS,
        probe=OfflineProbe(),
        slots=frozenset({"detector"}),
        engine_builders={"detector": BUILDER},
    )
    age(state / "engines")
    assert (
        install_bundle(installer, fleet.bundle(manifest_version=2, release=2)).outcome
        == "committed"
    )
    assert old_cached.exists()  # v1 is still ``previous``
    assert len(trt.builds) == 1  # the same ONNX file: the rebuild is reused and linked
    assert (
        install_bundle(installer, fleet.bundle(manifest_version=3, release=3)).outcome
        == "committed"
    )
    assert not old_cached.exists()
    assert not old_cached.with_suffix(".json").exists()
    assert rebuilt.exists()  # linked by v2 and v3 now
    [pruned] = [e for e in log_events if e["event"] == "engine_cache_pruned"]
    assert pruned["removed"] == [old_cached.name]
    assert pruned["bytes_freed"] > 0


def test_tampered_onnx_is_not_built_and_the_slot_is_down(
    tmp_path: Path, fleet: Fleet, slot: Slot, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    engine = installed_under(JETPACK5, state, fleet, monkeypatch)
    onnx = engine.parent / fleet.model.name
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.chmod(0o644)
    onnx.write_bytes(bytes(data))
    onnx.chmod(0o444)
    trt = use_stack(monkeypatch, JETPACK6)
    slot.start()
    refresher = refresher_for(state, slot)
    refresher.run()
    assert trt.builds == []
    health = refresher.health()["model:detector"]
    assert health["status"] == "down"
    assert "hash_mismatch" in health["detail"]
    assert slot.loaded is None
    assert not list((state / "engines").glob("*trt10.3.0*"))


def test_failed_build_leaves_the_slot_down_without_retrying(
    tmp_path: Path, fleet: Fleet, slot: Slot, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    installed_under(JETPACK5, state, fleet, monkeypatch)
    use_stack(monkeypatch, JETPACK6, fail_build="out of memory while building")
    slot.start()
    attempts: list[Path] = []

    def builder(onnx: Path, cache: Path) -> Path:
        attempts.append(onnx)
        return BUILDER(onnx, cache)

    refresher = refresher_for(state, slot, builder)
    refresher.start()
    refresher.join(30.0)
    assert attempts == [attempts[0]]
    health = refresher.health()["model:detector"]
    assert health["status"] == "down"
    assert "incompatible" in health["detail"]
    assert "out of memory while building" in health["detail"]
    assert slot.loaded is None


def test_engine_that_fails_to_load_on_the_same_stack_is_rebuilt_once(
    tmp_path: Path, fleet: Fleet, slot: Slot, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    engine = installed_under(JETPACK6, state, fleet, monkeypatch)
    trt = use_stack(monkeypatch, JETPACK6)
    engine.chmod(0o644)
    engine.write_bytes(b"not a plan")  # the cache's hard link shares these bytes
    engine.chmod(0o444)
    slot.start()
    assert slot.loaded is None
    assert "could not deserialize" in slot.error
    refresher = refresher_for(state, slot)
    refresher.run()
    assert len(trt.builds) == 1
    assert refresher.health() == {}
    assert slot.loaded is not None
    assert slot.loaded.path.parent == state / "engines"
    assert engine.read_bytes() == b"not a plan"  # the version dir is not written


def test_daemon_start_prunes_orphans_and_rebuilds_in_the_background(
    tmp_path: Path, fleet: Fleet, slot: Slot, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    installed_under(JETPACK5, state, fleet, monkeypatch)
    orphan = state / "engines" / "0123456789abcdef-trt8.5.2.2-sm72-xavier-fake-fp16.engine"
    orphan.write_bytes(b"engine of a model no longer installed")
    orphan.with_suffix(".json").write_text('{"onnx_sha256": "' + "0" * 64 + '"}')
    age(state / "engines")
    trt = use_stack(monkeypatch, JETPACK6)
    cfg = AgentConfig(storage={"state_dir": str(state)}, models=[MODEL])  # type: ignore[arg-type]  # pydantic coerces
    assert isinstance(build_installer(cfg, OfflineProbe()), PruningInstaller)
    slot.start()
    refresher = start_engine_refresh(cfg, state, slot, threading.Event())
    assert not orphan.exists()
    assert not orphan.with_suffix(".json").exists()
    assert refresher is not None
    refresher.join(30.0)
    assert len(trt.builds) == 1
    assert slot.loaded is not None
    # Nothing to rebuild on without TensorRT: no thread, the slot reports the load error.
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert start_engine_refresh(cfg, state, slot, threading.Event()) is None


def test_local_diag_after_an_upgrade_says_the_daemon_rebuilds_then_checks_the_rebuild(
    tmp_path: Path, fleet: Fleet, slot: Slot, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    installed_under(JETPACK5, state, fleet, monkeypatch)
    use_stack(monkeypatch, JETPACK6)
    cfg = AgentConfig.model_validate(
        {
            "storage": {"state_dir": str(state)},
            "models": [MODEL.model_dump(mode="json")],
        }
    )
    before = check_model_local(cfg, cfg.models[0])
    assert before.status.value == "warn", before
    assert "built for TensorRT 8.5.2.2" in before.detail
    assert "rebuilds the engine" in before.hint

    slot.start()
    refresher_for(state, slot).run()  # what the daemon does at start-up
    after = check_model_local(cfg, cfg.models[0])
    assert after.data["path"].startswith(str(state / "engines")), after
    assert after.data["runtime"].endswith("10.3.0"), after
    assert after.status.value == "ok", after
