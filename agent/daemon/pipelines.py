"""The daemon's pipeline seam: what the supervisor needs of it, and the real one's factory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agent.config import AgentConfig
from agent.events.types import EventSink
from agent.log import get_logger

log = get_logger(__name__)


class PipelineLike(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout_s: float = 10.0) -> None: ...
    def stats_snapshot(self) -> dict[str, Any]: ...
    def health_snapshot(self) -> dict[str, dict[str, str]]: ...
    def reload_model(self, slot: str, path: Path) -> None: ...
    def model_info(self) -> dict[str, dict[str, Any]]: ...
    def last_progress_mono_s(self) -> float: ...


PipelineFactory = Callable[[AgentConfig, EventSink, Path, threading.Event], PipelineLike]


def default_pipeline_factory(
    config: AgentConfig, sink: EventSink, state_dir: Path, stop: threading.Event
) -> PipelineLike:
    from agent.pipeline.runner import Pipeline  # noqa: PLC0415 - keeps runtimes out of import

    return Pipeline(config, sink, state_dir, installed_model_paths(config, state_dir), stop=stop)


def installed_model_paths(config: AgentConfig, state_dir: Path) -> dict[str, Path]:
    """Model file per slot from the update store; slots without an installed update are absent.

    Read once at start-up, so a restart after an update serves the committed (or
    trial) version rather than the provisioned ``[[models]].path``.
    """
    from agent.update.store.models import ModelStore  # noqa: PLC0415 - keeps update code off the import path

    store = ModelStore(state_dir)
    found: dict[str, Path] = {}
    for model in config.models:
        path = store.current_model(model.slot)
        if path is not None:
            found[model.slot] = path
    if found:
        log.info("installed_models", slots={k: str(v) for k, v in found.items()})
    return found
