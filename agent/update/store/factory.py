"""Build an ``Installer`` from the agent config (shared by the CLI and the daemon)."""

from __future__ import annotations

import functools
from pathlib import Path

from agent import __version__
from agent.config.root import AgentConfig
from agent.inference.devicefacts import collect
from agent.update.engines.builder import EngineBuilder, default_engine_builder
from agent.update.engines.cache import PruningInstaller
from agent.update.store.installer import Installer
from agent.update.store.probe import HealthProbe
from agent.update.trust.policy import DeviceFacts


def device_facts(cfg: AgentConfig) -> DeviceFacts:
    """Detected facts, then the config's ``update.compat_facts`` on top (operator knows best)."""
    facts = {**collect(), "agent": __version__, **cfg.update.compat_facts}
    return DeviceFacts(device_id=cfg.device.id, fleet=cfg.device.fleet, compat=facts)


def engine_builders(cfg: AgentConfig) -> dict[str, EngineBuilder]:
    """One staging-time engine builder per slot whose effective backend is TensorRT."""
    builders: dict[str, EngineBuilder] = {}
    for model in cfg.models:
        if cfg.backend_for(model) != "tensorrt":
            continue
        width_height = model.input_size
        size = (width_height[1], width_height[0]) if width_height else None  # config is [w, h]
        builders[model.slot] = functools.partial(default_engine_builder, input_size=size)
    return builders


def build_installer(cfg: AgentConfig, probe: HealthProbe) -> Installer:
    # With TensorRT slots, each deployment step ends by pruning the engine cache.
    kind = PruningInstaller if engine_builders(cfg) else Installer
    return kind(
        Path(cfg.storage.state_dir),
        provisioned_root=Path(cfg.trust.root),
        facts=device_facts(cfg),
        probe=probe,
        slots=frozenset(m.slot for m in cfg.models),
        max_model_bytes=cfg.update.max_model_bytes,
        max_transitions=cfg.update.max_transitions,
        engine_builders=engine_builders(cfg),
    )
