"""TLS with server verification, mutual TLS and a password from a file secret, on a real broker."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.config.uplink import MqttConfig
from agent.uplink.link import Link, LinkDownError
from agent.uplink.topics import Topics
from tests.integration.mqtt_helpers import Recorder
from tests.support.mosquitto import MosquittoBroker, make_tls_files

pytestmark = pytest.mark.broker
TOPICS = Topics("ea/v1", "cam-001")


def connect(cfg: MqttConfig, state_dir: Path, wait_s: float = 5.0) -> tuple[Link, bool]:
    link = Link(cfg, TOPICS, state_dir, threading.Event())
    link.start()
    return link, link.wait_connected(wait_s)


@pytest.fixture
def mtls_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(
        tmp_path / "broker", tls=make_tls_files(tmp_path / "tls"), require_client_cert=True
    )
    broker.start()
    yield broker
    broker.stop()


def test_tls_verifies_the_server(mosquitto_tls: MosquittoBroker, tmp_path: Path) -> None:
    assert mosquitto_tls.tls is not None
    cfg = MqttConfig(url=mosquitto_tls.url, ca=str(mosquitto_tls.tls.ca))
    link, up = connect(cfg, tmp_path / "s1")
    try:
        assert up
        assert link.publish(TOPICS.health, b"{}", qos=1).wait(5)
    finally:
        link.stop()
    # A CA that did not sign the server certificate: never connects.
    other = make_tls_files(tmp_path / "other")
    link, up = connect(MqttConfig(url=mosquitto_tls.url, ca=str(other.ca)), tmp_path / "s2", 2.0)
    try:
        assert not up
        assert link.attempts >= 1
        with pytest.raises(LinkDownError):
            link.publish(TOPICS.health, b"{}")
    finally:
        link.stop()


def test_mutual_tls(mtls_broker: MosquittoBroker, tmp_path: Path) -> None:
    tls = mtls_broker.tls
    assert tls is not None
    link, up = connect(MqttConfig(url=mtls_broker.url, ca=str(tls.ca)), tmp_path / "s1", 2.0)
    link.stop()
    assert not up  # no client certificate: refused
    cfg = MqttConfig(
        url=mtls_broker.url, ca=str(tls.ca), cert=str(tls.client_cert), key=str(tls.client_key)
    )
    link, up = connect(cfg, tmp_path / "s2")
    link.stop()
    assert up


def test_password_from_file_secret(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "cam-001", "s3cret"], check=True)
    broker = MosquittoBroker(
        tmp_path / "broker", extra_config=["allow_anonymous false", f"password_file {passwd}"]
    )
    broker.start()
    try:
        secret = tmp_path / "mqtt-password"
        secret.write_text("s3cret\n")
        rec = Recorder(broker.url, TOPICS.state, username="cam-001", password="s3cret")
        good = MqttConfig(url=broker.url, username="cam-001", password=SecretStr(f"file:{secret}"))
        link, up = connect(good, tmp_path / "s1")
        link.stop()
        assert up
        assert rec.wait_for(lambda: any(json.loads(p)["online"] for p in rec.on(TOPICS.state)))
        rec.close()
        bad = MqttConfig(url=broker.url, username="cam-001", password=SecretStr("wrong"))
        link, up = connect(bad, tmp_path / "s2", 2.0)
        link.stop()
        assert not up
    finally:
        broker.stop()
