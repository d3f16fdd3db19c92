"""The desired-config layer: precedence, sources, storage and the CLI that loads it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.cli.main import main as agent_main
from agent.config import load_config
from agent.config.desired import (
    desired_path,
    load_with_desired,
    load_with_layer,
    read_desired,
    write_desired,
)
from agent.config.loader import DesiredLayer
from agent.daemon.remote_config import changed_keys, shadowed_keys
from agent.errors import ConfigError


@pytest.fixture
def config_file(write_config, tmp_path: Path) -> Path:
    return write_config(
        f"""
        [device]
        id = "cam-001"
        [storage]
        state_dir = "{tmp_path / "state"}"
        [telemetry]
        stats_interval_s = 30
        health_interval_s = 10
        [outbox]
        drain_rate_per_s = 50
        """
    )


def test_precedence_file_desired_env_flags_with_sources(config_file: Path) -> None:
    layer = DesiredLayer(
        3, {"telemetry": {"stats_interval_s": 5, "health_interval_s": 4}, "outbox": {}}
    )
    env = {"EDGE_AGENT__TELEMETRY__HEALTH_INTERVAL_S": "2"}
    loaded = load_config(config_file, env, ["outbox.drain_rate_per_s=7"], desired=layer)
    cfg = loaded.config
    assert cfg.telemetry.stats_interval_s == 5  # desired beats file
    assert cfg.telemetry.health_interval_s == 2  # env beats desired
    assert cfg.outbox.drain_rate_per_s == 7  # flags beat everything
    assert loaded.sources[("telemetry", "stats_interval_s")] == "mqtt:config v3"
    assert loaded.sources[("telemetry", "health_interval_s")].startswith("env:")
    assert loaded.desired_version == 3
    assert loaded.assignments == ("outbox.drain_rate_per_s=7",)
    assert shadowed_keys(layer, loaded) == [
        {
            "key_path": "telemetry.health_interval_s",
            "source": "env:EDGE_AGENT__TELEMETRY__HEALTH_INTERVAL_S",
        }
    ]


def test_invalid_desired_issues_name_the_layer(config_file: Path) -> None:
    base = load_config(config_file, {})
    layer = DesiredLayer(4, {"telemetry": {"stats_interval_s": -1}})
    with pytest.raises(ConfigError) as info:
        load_with_layer(base, layer, {})
    by_key = {i.key_path: i for i in info.value.issues}
    assert set(by_key) == {"telemetry.stats_interval_s"}
    assert by_key["telemetry.stats_interval_s"].source == "mqtt:config v4"
    assert by_key["telemetry.stats_interval_s"].value == "-1"


def test_keys_off_the_allow_list_are_named_and_never_echoed(config_file: Path) -> None:
    base = load_config(config_file, {})
    layer = DesiredLayer(
        4,
        {
            "telemetry": {"stats_interval_s": 5},
            "mqtt": {"password": "file:/etc/edge-agent/client.key", "url": "mqtt://evil:1883"},
        },
    )
    with pytest.raises(ConfigError) as info:
        load_with_layer(base, layer, {})
    by_key = {i.key_path: i for i in info.value.issues}
    assert set(by_key) == {"mqtt.url", "mqtt.password"}
    assert all(i.source == "mqtt:config v4" for i in by_key.values())
    assert all("client.key" not in i.value for i in by_key.values())


def test_stored_layer_round_trip_and_loaded_at_start(config_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    # No state dir yet: the file alone.
    assert load_with_desired(config_file, {}).desired_version is None
    state.mkdir()
    assert read_desired(state) is None
    write_desired(state, DesiredLayer(2, {"telemetry": {"stats_interval_s": 3}}), accepted_at=1.0)
    assert stat.S_IMODE(desired_path(state).stat().st_mode) == 0o600
    assert read_desired(state) == DesiredLayer(2, {"telemetry": {"stats_interval_s": 3}})
    loaded = load_with_desired(config_file, {})
    assert loaded.desired_version == 2
    assert loaded.config.telemetry.stats_interval_s == 3
    base = load_config(config_file, {})
    assert changed_keys(base.config, loaded.config) == ["telemetry.stats_interval_s"]


def test_stored_layer_that_no_longer_validates(config_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_desired(state, DesiredLayer(5, {"telemetry": {"stats_interval_s": 0}}))
    with pytest.raises(ConfigError) as info:
        load_with_desired(config_file, {})
    assert info.value.issues[0].source == "mqtt:config v5"
    # The daemon leaves it out instead of refusing to start.
    fallback = load_with_desired(config_file, {}, strict=False)
    assert fallback.desired_version is None
    assert fallback.config.telemetry.stats_interval_s == 30


def test_corrupt_stored_layer(config_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    desired_path(state).write_text("{nope", encoding="utf-8")
    with pytest.raises(ConfigError):
        read_desired(state)
    desired_path(state).write_text(json.dumps({"version": "1", "config": {}}), encoding="utf-8")
    with pytest.raises(ConfigError):
        read_desired(state)
    assert load_with_desired(config_file, {}, strict=False).desired_version is None


def test_validate_config_cli_loads_and_blames_the_desired_layer(
    config_file: Path, tmp_path: Path, clean_env, capsys
) -> None:
    state = tmp_path / "state"
    write_desired(state, DesiredLayer(6, {"telemetry": {"stats_interval_s": 9}}))
    assert agent_main(["validate-config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "desired config v6" in out
    assert str(desired_path(state)) in out
    write_desired(state, DesiredLayer(7, {"telemetry": {"stats_interval_s": "soon"}}))
    assert agent_main(["validate-config", str(config_file)]) == 1
    err = capsys.readouterr().err
    assert "mqtt:config v7: telemetry.stats_interval_s" in err
