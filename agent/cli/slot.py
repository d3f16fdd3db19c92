"""``--config FILE [--slot NAME]`` for demo and bench: one configured model, as it will run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.config.model import ModelConfig
from agent.errors import ConfigError

# Keys that belong to the slot's place in a deployment, not to how the model runs.
NOT_CARRIED = {"cameras"}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run a [[models]] entry of this config file (backend, decoder, input settings)",
    )
    parser.add_argument(
        "--slot", default=None, help="which [[models]] slot of --config (default: the first)"
    )


def configured_model(path: Path, slot: str | None) -> ModelConfig:
    """The ``slot`` entry (or the first) of the config at ``path``, validated by the loader."""
    models = load_config(path).config.models
    if not models:
        raise ConfigError(f"{path}: no [[models]] entry to run")
    if slot is None:
        return models[0]
    for model in models:
        if model.slot == slot:
            return model
    known = ", ".join(m.slot for m in models)
    raise ConfigError(f"{path}: no model slot {slot!r} (slots: {known})")


def model_entry(model: ModelConfig) -> dict[str, Any]:
    """The entry as config keys, for a demo or bench config of its own."""
    return model.model_dump(exclude=NOT_CARRIED, exclude_defaults=True)
