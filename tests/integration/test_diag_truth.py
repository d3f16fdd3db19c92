"""Issue 17.7: diag says what is really wrong (through the daemon too) and nothing false."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import MqttConfig
from agent.diag.broker import check_broker_live, check_tls
from agent.diag.report import Status
from tests.support.mosquitto import MosquittoBroker, password_broker


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = password_broker(tmp_path, "cam-1", "right")
    yield broker
    broker.stop()


@pytest.mark.broker
def test_daemon_diag_passes_the_connect_cause_through(secured):
    cfg = MqttConfig(url=secured.url, username="cam-1", password="wrong")  # type: ignore[arg-type]
    live = {"link": {"connected": False, "url": secured.url}}
    result = check_broker_live(cfg, live, "cam-1", timeout_s=3.0)
    assert result.status is Status.FAIL
    assert result.detail.startswith(f"daemon not connected to {secured.url}: CONNACK from ")
    assert "refused: Not authorized" in result.detail
    assert "username/password" in result.hint
    # The daemon connected: no probe, no extra connection.
    connected = {"link": {"connected": True, "url": secured.url}}
    assert check_broker_live(cfg, connected, "cam-1").status is Status.OK


def test_no_plaintext_warning_for_a_broker_on_this_host():
    for url in ("mqtt://127.0.0.1:1883", "mqtt://localhost:1883", "mqtt://[::1]:1883"):
        result = check_tls(MqttConfig(url=url))
        assert result.status is Status.OK, url
        assert "loopback" in result.detail
    remote = check_tls(MqttConfig(url="mqtt://10.1.2.3:1883"))
    assert remote.status is Status.WARN
    assert "unencrypted" in remote.detail
