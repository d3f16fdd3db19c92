"""Build an ``Installer`` from the agent config (shared by the CLI and the daemon)."""

from __future__ import annotations

from pathlib import Path

from agent import __version__
from agent.config.root import AgentConfig
from agent.inference.devicefacts import collect
from agent.update.installer import Installer
from agent.update.policy import DeviceFacts
from agent.update.probe import HealthProbe


def device_facts(cfg: AgentConfig) -> DeviceFacts:
    """Detected facts, then the config's ``update.compat_facts`` on top (operator knows best)."""
    facts = {**collect(), "agent": __version__, **cfg.update.compat_facts}
    return DeviceFacts(device_id=cfg.device.id, fleet=cfg.device.fleet, compat=facts)


def build_installer(cfg: AgentConfig, probe: HealthProbe) -> Installer:
    return Installer(
        Path(cfg.storage.state_dir),
        provisioned_root=Path(cfg.trust.root),
        facts=device_facts(cfg),
        probe=probe,
        slots=frozenset(m.slot for m in cfg.models),
        max_model_bytes=cfg.update.max_model_bytes,
        max_transitions=cfg.update.max_transitions,
    )
