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
from agent.config.update import UpdateConfig
from agent.update.store.factory import build_installer
from agent.update.store.installer import Installer
from agent.update.store.probe import LiveProbe
from agent.update.store.shadow import LiveFrames, ShadowBudget, ShadowTrial
from agent.update.store.slotmodel import SlotDetectors
from agent.update.transfer.https_client import HttpsSettings
from agent.update.transfer.https_source import HttpsFetcher
from agent.update.transfer.service import UpdateService
from agent.update.transfer.settings import Bus, ServiceSettings
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


def https_settings(cfg: UpdateConfig) -> HttpsSettings:
    return HttpsSettings(
        ca_file=cfg.https_ca_file,
        connect_timeout_s=cfg.https_connect_timeout_s,
        read_timeout_s=cfg.https_read_timeout_s,
        allowed_hosts=tuple(cfg.https_allowed_hosts),
        max_range_bytes=cfg.https_max_range_bytes,
    )


def live_installer(cfg: AgentConfig, pipeline: LivePipeline, stop: threading.Event) -> Installer:
    """The daemon's installer: trials in the running pipeline (MQTT and local commands share it)."""
    configured = {m.slot: Path(m.path) for m in cfg.models}
    # Golden cases and the shadow run each model as its slot is configured to.
    detectors = SlotDetectors(cfg)
    shadow = None
    if isinstance(pipeline, LiveFrames):  # a pipeline that shares its frames
        cameras = {m.slot: [c.name for c in cfg.cameras_for(m)] for m in cfg.models}
        budget = ShadowBudget(duty=cfg.board.shadow_busy_share)  # the board's share
        shadow = ShadowTrial(pipeline, detectors, cameras, stop, budget)
    probe = LiveProbe(
        pipeline, PipelineSlotHealth(pipeline), stop, configured, detectors=detectors, shadow=shadow
    )
    return build_installer(cfg, probe)


def start_update_service(
    cfg: AgentConfig,
    bus: Bus,
    pipeline: LivePipeline,
    stop: threading.Event,
    installer: Installer | None = None,
) -> UpdateService | None:
    """Build and start the service (it first settles an interrupted install); None if disabled."""
    if not cfg.update.enabled:
        return None
    installer = installer or live_installer(cfg, pipeline, stop)
    settings = ServiceSettings(
        device_id=cfg.device.id,
        fleet=cfg.device.fleet,
        deadline_s=cfg.update.transfer_deadline_s,
        block_on_stale_heartbeat=cfg.update.block_on_stale_heartbeat,
        recover_on_start=True,
    )
    https = HttpsFetcher(https_settings(cfg.update), stop) if cfg.update.https_enabled else None
    topics = Topics(cfg.mqtt.topic_root)
    service = UpdateService(bus, installer, topics, settings, stop, https=https)
    service.start()
    return service
