"""Start the MQTT update service inside the daemon: installer, live trial probe, service.

The live probe reloads the slot in the running pipeline (``pipeline.reload_model``) and
watches ``pipeline.health_snapshot()["model:<slot>"]`` for the trial, so inference
goes on throughout and a bad model is rolled back while the camera keeps running.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from agent.config.root import AgentConfig
from agent.update.factory import build_installer
from agent.update.probe import LiveProbe
from agent.update.transfer.service import Bus, ServiceSettings, UpdateService
from agent.update.transfer.wire import Topics


class LivePipeline(Protocol):
    def reload_model(self, slot: str, path: Path) -> None: ...

    def health_snapshot(self) -> dict[str, dict[str, str]]: ...


class PipelineSlotHealth:
    """``SlotHealth`` from the pipeline's health snapshot: a slot is healthy unless ``down``."""

    def __init__(self, pipeline: LivePipeline) -> None:
        self._pipeline = pipeline

    def model_health(self, slot: str) -> tuple[bool, str]:
        entry: dict[str, Any] = self._pipeline.health_snapshot().get(f"model:{slot}", {})
        status = str(entry.get("status", "down"))
        return status != "down", f"{status}: {entry.get('detail', 'no health for slot')}"


def start_update_service(
    cfg: AgentConfig, bus: Bus, pipeline: LivePipeline, stop: threading.Event
) -> UpdateService | None:
    """Build and start the service (it first settles an interrupted install); None if disabled."""
    if not cfg.update.enabled:
        return None
    configured = {m.slot: Path(m.path) for m in cfg.models}
    probe = LiveProbe(pipeline, PipelineSlotHealth(pipeline), stop, configured)
    installer = build_installer(cfg, probe)
    settings = ServiceSettings(
        device_id=cfg.device.id,
        fleet=cfg.device.fleet,
        deadline_s=cfg.update.transfer_deadline_s,
        recover_on_start=True,
    )
    service = UpdateService(bus, installer, Topics(cfg.mqtt.topic_root), settings, stop)
    service.start()
    return service
