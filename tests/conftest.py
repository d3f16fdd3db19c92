"""Shared fixtures: config files, a real Mosquitto broker, sample assets, log capture, fleet
keys and an operator that records op states."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog

from agent import log
from agent.assets import find_asset
from tests.support.mosquitto import MosquittoBroker, make_tls_files

if TYPE_CHECKING:
    from tests.integration.test_delivery import Operator

# Any test may configure logging; cached loggers would then hide later tests' log events.
log.CACHE_LOGGERS_DEFAULT = False


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a TOML config (dedented) into the test's temp dir and return its path."""

    def _write(text: str, name: str = "agent.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No EDGE_AGENT_* variables from the calling shell leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("EDGE_AGENT"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def log_events() -> Iterator[list[structlog.typing.EventDict]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def require_asset(relative: str) -> Path:
    path = find_asset(relative)
    if path is None:
        pytest.fail(
            f"sample asset {relative} missing: run `python tools/fetch_assets.py` (make setup)"
        )
    return path


@pytest.fixture(scope="session")
def short_range_model() -> Path:
    return require_asset("models/face_detection_short_range.tflite")


@pytest.fixture(scope="session")
def sample_clip() -> Path:
    return require_asset("clips/sample.mp4")


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return require_asset("images")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(tmp_path / "broker", tls=make_tls_files(tmp_path / "tls"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A fleet's signing keys (as ``edge-fleet keys init`` makes them) in the test's temp dir."""
    from agent.fleet.keys import init_keys

    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def operator(mosquitto: MosquittoBroker) -> Iterator[Operator]:
    """A fleet client on ``mosquitto`` that records every device's model update op states."""
    from agent.fleet.mqttclient import FleetClient
    from tests.integration.test_delivery import TOPICS, Operator

    client = FleetClient(mosquitto.url).connect()
    op = Operator(client)
    client.subscribe(TOPICS.model_update_filter(), op.on_state)
    yield op
    client.close()
