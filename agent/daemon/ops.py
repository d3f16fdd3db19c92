"""Handlers the daemon plugs into the command table and the control socket."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from agent.daemon.local_update import build_update_handlers
from agent.daemon.remote_config import persist_desired, validate_desired
from agent.errors import CommandError, Reason
from agent.update.store.commandgate import CommandGate
from agent.update.store.localbundle import install_from_dir
from agent.uplink.commands import Handler, require
from agent.uplink.snapshot import encode_bounded

if TYPE_CHECKING:
    from agent.daemon.supervisor import Supervisor


def run_diag(sup: Supervisor, names: list[str]) -> dict[str, Any]:
    from agent.diag.runner import run_checks  # noqa: PLC0415 - diag pulls in optional runtimes

    report = run_checks(sup.loaded, names or None, live=sup.status())
    result: dict[str, Any] = report.to_json()
    return result


SNAPSHOT_DEFAULT_BYTES = 128 * 1024
SNAPSHOT_MAX_BYTES = 1024 * 1024


@runtime_checkable
class FrameSource(Protocol):
    def latest_frame(self, camera: str) -> npt.NDArray[np.uint8] | None: ...


def snapshot_budget(sup: Supervisor, requested: int) -> int:
    """Bytes of JPEG allowed: base64 grows it by 4/3 and the op state must fit the outbox."""
    if requested < 1:
        raise CommandError(Reason.MALFORMED, "max_bytes must be positive")
    return min(requested, SNAPSHOT_MAX_BYTES, sup.config.outbox.max_bytes * 3 // 8)


def take_snapshot(sup: Supervisor, req: dict[str, Any]) -> dict[str, Any]:
    cameras = [c.name for c in sup.config.cameras]
    camera = require(req, "camera", str, cameras[0] if cameras else "")
    if camera not in cameras:
        raise CommandError(Reason.MALFORMED, f"unknown camera {camera!r}", cameras=cameras)
    budget = snapshot_budget(sup, require(req, "max_bytes", int, SNAPSHOT_DEFAULT_BYTES))
    quality = require(req, "quality", int, 85)
    if not 1 <= quality <= 100:
        raise CommandError(Reason.MALFORMED, "quality must be 1-100")
    # Not part of PipelineLike: fakes and older pipelines simply answer no_frame.
    pipeline: object = sup.pipeline
    frame = pipeline.latest_frame(camera) if isinstance(pipeline, FrameSource) else None
    if frame is None:
        raise CommandError(Reason.NO_FRAME, f"camera {camera!r} has no frame yet")
    result = encode_bounded(frame, budget, quality).to_result(camera)
    result["max_bytes"] = budget
    return result


def build_command_handlers(sup: Supervisor) -> dict[str, Handler]:
    def ping(_req: dict[str, Any]) -> dict[str, Any]:
        return {"pong": round(sup.clock.wall_s(), 3)}

    def health_check(_req: dict[str, Any]) -> dict[str, Any]:
        sup.publish_health()
        return {"health": sup.status()["health"]}

    def diag(req: dict[str, Any]) -> dict[str, Any]:
        checks = require(req, "checks", list, [])
        if not all(isinstance(c, str) for c in checks):
            raise CommandError(Reason.MALFORMED, "checks must be a list of names")
        return {"report": run_diag(sup, checks)}

    def restart(_req: dict[str, Any]) -> dict[str, Any]:
        sup.request_restart()
        return {"restarting": True}

    def config(req: dict[str, Any]) -> dict[str, Any]:
        if sup.installer is not None:  # a fleet root with a command role: signed only (18.1 c)
            device = sup.config.device
            gate = CommandGate(sup.installer.trust, device.id, device.fleet)
            req = gate.admit("config", req, sup.clock.wall_s())
        layer, loaded = validate_desired(sup.loaded, sup.state_dir, req)
        result = persist_desired(sup.loaded, sup.state_dir, layer, loaded, sup.clock.wall_s())
        if result["restarting"]:
            sup.request_restart()
        return result

    def snapshot(req: dict[str, Any]) -> dict[str, Any]:
        return take_snapshot(sup, req)

    return {
        "ping": ping,
        "health_check": health_check,
        "diag": diag,
        "restart": restart,
        "config": config,
        "snapshot": snapshot,
    }


def build_control_handlers(sup: Supervisor) -> dict[str, Handler]:
    def status(_req: dict[str, Any]) -> dict[str, Any]:
        return sup.status()

    def diag(req: dict[str, Any]) -> dict[str, Any]:
        checks = req.get("checks") or []
        if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
            return {"ok": False, "error": "malformed"}
        return {"ok": True, "report": run_diag(sup, checks)}

    handlers: dict[str, Handler] = {"status": status, "diag": diag}
    if sup.installer is not None:
        slots = [m.slot for m in sup.config.models]
        handlers.update(build_update_handlers(sup.installer, slots, install_from_dir))
    return handlers
