"""``model:<slot>``: load the slot's model and run one smoke inference within its budget."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AgentConfig, ModelConfig
from agent.diag.bounded import run_bounded
from agent.diag.report import CheckResult, fail, ok, warn
from agent.errors import BackendUnavailableError, InferenceError, ModelLoadError
from agent.pipeline.model import resolve_backend


def installed_model_path(state_dir: Path, slot: str) -> Path | None:
    """The slot's installed update, when the update store exists and has one."""
    try:
        # By name: the update store is optional in a base install.
        store_module = importlib.import_module("agent.update.store.models")
    except ImportError:
        return None
    found = store_module.ModelStore(state_dir).current_model(slot)
    return Path(found) if found is not None else None


def model_path_for(cfg: AgentConfig, model: ModelConfig) -> tuple[Path, str]:
    installed = installed_model_path(Path(cfg.storage.state_dir), model.slot)
    if installed is not None:
        return installed, "installed"
    return Path(model.path), "config"


def tensorrt_engine_for(path: Path) -> Path:
    """The installed engine, or its rebuild for this TensorRT and GPU (as the daemon loads).

    Raises ModelLoadError while the engine still needs the rebuild the daemon makes.
    """
    # Imported here: the update code stays off the import path of tflite/onnx devices.
    from agent.update.engines.cache import runtime_target  # noqa: PLC0415
    from agent.update.engines.rebuild import resolve_installed_engine  # noqa: PLC0415

    return resolve_installed_engine(path, runtime_target)


def smoke(cfg: AgentConfig, model: ModelConfig, path: Path) -> dict[str, Any]:
    """Load and run once on a mid-grey input; raises InferenceError subclasses."""
    from agent.inference.registry import BackendOptions, create_backend  # noqa: PLC0415

    options = BackendOptions(
        threads=cfg.threads_for(model),
        edgetpu=cfg.board.accelerator == "edgetpu" and "edgetpu" in path.name,
        edgetpu_library=cfg.board.edgetpu_library,
    )
    started = time.monotonic()
    backend = create_backend(resolve_backend(cfg, model, path), path, options)
    try:
        loaded = time.monotonic()
        tensor = backend.input_buffer()
        # Mid-grey in the input's own range: zeros can be a degenerate input for some models.
        tensor[...] = 0 if np.issubdtype(tensor.dtype, np.floating) else 128
        outputs = backend.infer(tensor)
        done = time.monotonic()
        runtime = backend.runtime
        return {
            "runtime": f"{runtime.name} {runtime.version}",
            "device": runtime.device,
            "load_ms": round((loaded - started) * 1000, 1),
            "infer_ms": round((done - loaded) * 1000, 1),
            "input": list(backend.input_spec.tensor.shape),
            "outputs": [list(o.shape) for o in outputs],
            "finite": all(bool(np.isfinite(o).all()) for o in outputs if o.dtype.kind == "f"),
        }
    finally:
        backend.close()


def check_model_local(  # noqa: PLR0911 - one return per verdict, worst first
    cfg: AgentConfig, model: ModelConfig
) -> CheckResult:
    name = f"model:{model.slot}"
    path, origin = model_path_for(cfg, model)
    backend = resolve_backend(cfg, model, path)
    if not path.is_file():
        return fail(
            name,
            f"{origin} model file {path} is missing",
            "fix models.path or reinstall the model; `edge-agent update status` shows the slot",
            path=str(path),
        )
    if backend == "tensorrt" and origin == "installed":
        try:
            path = tensorrt_engine_for(path)
        except ModelLoadError as exc:
            return warn(
                name,
                str(exc),
                "start the daemon (systemctl restart edge-agent): it rebuilds the engine "
                "from the verified ONNX file in the background, then loads it",
                path=str(path),
                origin=origin,
                backend=backend,
            )
    # The smoke test is also the stuck-accelerator test: it must come back in budget.
    budget_s = model.inference_timeout_s
    # Loading (TensorRT engines) may take longer than one invoke: 30 s on top.
    result = run_bounded(f"diag-{name}", lambda: smoke(cfg, model, path), budget_s + 30.0)
    data: dict[str, Any] = {"path": str(path), "origin": origin, "backend": backend}
    if result is None:
        return fail(
            name,
            f"{backend} did not load and run {path.name} within {budget_s + 30.0:.0f} s",
            "the accelerator may be hung; check dmesg and reboot",
            **data,
        )
    if isinstance(result, BackendUnavailableError):
        return fail(
            name,
            str(result),
            f"install the runtime: pip install 'edge-agent[{backend}]' (JetPack for tensorrt)",
            **data,
        )
    if isinstance(result, InferenceError):
        return fail(
            name,
            f"{path.name}: {result}",
            "the file is corrupt or built for another runtime/accelerator; roll back the slot",
            **data,
        )
    if isinstance(result, BaseException):
        raise result
    data.update(result)
    summary = (
        f"{path.name} ({origin}) on {result['runtime']} [{result['device']}]: "
        f"load {result['load_ms']:.0f} ms, infer {result['infer_ms']:.1f} ms"
    )
    if result["infer_ms"] > budget_s * 1000:
        return fail(
            name,
            f"{summary}, over inference_timeout_s={budget_s:g}",
            "the model is too heavy for this board or the accelerator is throttled",
            **data,
        )
    if not result["finite"]:
        return warn(
            name, f"{summary}; outputs contain NaN/inf", "check the model's quantisation", **data
        )
    return ok(name, summary, **data)


def check_model_live(model: ModelConfig, live: dict[str, Any]) -> CheckResult:
    name = f"model:{model.slot}"
    models = live.get("models") if isinstance(live.get("models"), dict) else {}
    info = models.get(model.slot) if isinstance(models, dict) else None
    components = (live.get("health") or {}).get("components") or {}
    health = components.get(f"model/{model.slot}") or components.get(f"model:{model.slot}")
    state = health.get("status") if isinstance(health, dict) else health
    data = {"live": True, "model": info, "health": health}
    if info is None and state is None:
        return warn(
            name,
            "the running daemon reports nothing for this slot",
            "check the daemon log; did the model fail to load at start?",
            **data,
        )
    desc = live_model_summary(model.slot, live, health)
    if state in ("down", "fail", "failed", "stuck"):
        return fail(
            name, f"daemon reports {state}: {desc}", "see the daemon log for the error", **data
        )
    if state in ("degraded", "warn"):
        return warn(name, f"daemon reports {state}: {desc}", "see the daemon log", **data)
    return ok(name, f"live: {desc}", **data)


def live_model_summary(slot: str, live: dict[str, Any], health: Any) -> str:
    """Health detail, runtime and inference percentiles from the daemon's stats."""
    stats = ((live.get("stats") or {}).get("models") or {}).get(slot) or {}
    parts = []
    if isinstance(health, dict) and health.get("detail"):
        parts.append(str(health["detail"]))
    runtime = stats.get("runtime")
    if isinstance(runtime, dict):
        parts.append(f"{runtime.get('name')} {runtime.get('version')}")
    timing = stats.get("inference_ms")
    if isinstance(timing, dict) and timing.get("n"):
        parts.append(f"inference p50 {timing.get('p50')} ms, p95 {timing.get('p95')} ms")
    return "; ".join(parts) or "loaded"
