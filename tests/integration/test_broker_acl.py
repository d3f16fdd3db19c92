"""docs/broker/: the ACL template, rendered for two devices, enforced by a real Mosquitto."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.mosquitto import MosquittoBroker
from tools.render_broker_acl import main as render_main
from tools.render_broker_acl import render_acl

pytestmark = pytest.mark.broker
TEMPLATE = Path(__file__).resolve().parents[2] / "docs" / "broker" / "acl.template"
ROOT = "ea/v1"
PASSWORDS = {"cam-a": "pw-a", "cam-b": "pw-b", "fleet-ops": "pw-ops"}


class Client:
    """A plain MQTT 5 client logged in as one account, recording what it receives."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.acks: dict[int, int] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        connected = threading.Event()
        self.rc: ReasonCode | None = None

        def on_connect(_c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
            self.rc = rc
            connected.set()

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(5)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: Properties) -> None:
        self.acks[mid] = rc.value

    def subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe([(f, 1) for f in filters])
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        return self.acks.get(info.mid, -1)

    def received(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.got if t == topic]

    def wait(self, topic: str, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.received(topic):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[MosquittoBroker]:
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    acl = tmp_path / "acl"
    acl.write_text(
        render_acl(
            TEMPLATE.read_text(encoding="utf-8"),
            ROOT,
            ["fleet-ops"],
            [("cam-a", "fleet-a"), ("cam-b", "fleet-b")],
        ),
        encoding="utf-8",
    )
    broker = MosquittoBroker(
        tmp_path / "broker",
        extra_config=["allow_anonymous false", f"password_file {passwd}", f"acl_file {acl}"],
    )
    broker.start()
    yield broker
    broker.stop()


def d(dev: str, suffix: str) -> str:
    return f"{ROOT}/d/{dev}/{suffix}"


def test_device_confined_to_its_own_topics(secured: MosquittoBroker) -> None:
    ops = Client(secured.port, "fleet-ops", "pw-ops")
    a = Client(secured.port, "cam-a", "pw-a")
    b = Client(secured.port, "cam-b", "pw-b")
    try:
        ops.subscribe(f"{ROOT}/#")
        a.subscribe(d("cam-a", "cmd/+/+"), d("cam-b", "cmd/#"), f"{ROOT}/d/+/cmd/#", f"{ROOT}/f/#")
        b.subscribe(d("cam-b", "cmd/+/+"), f"{ROOT}/f/fleet-b/#")

        # Denied first, then an allowed publish on the same connection: once the allowed one
        # has arrived, the denied ones (sent before it, in order) would have too.
        assert a.publish(d("cam-b", "state"), b'{"online":false}', retain=True) == 135
        assert a.publish(d("cam-a", "cmd/restart/self"), b"{}") == 135
        assert a.publish(f"{ROOT}/f/fleet-a/heartbeat", b"forged") == 135
        for topic, payload, retain in [
            (d("cam-a", "state"), b'{"online":true}', True),
            (d("cam-a", "health"), b"{}", True),
            (d("cam-a", "m/stats"), b"{}", False),
            (d("cam-a", "e/detection"), b'{"seq":1}', False),
            (d("cam-a", "a/camera_down"), b"{}", True),
            (d("cam-a", "op/ping/c1"), b'{"status":"successful"}', True),
            (d("cam-a", "xfer/dep-1/req"), b"{}", False),
            (d("cam-a", "snapshot/door"), b"\xff\xd8jpeg", True),
            (d("cam-a", "ha/update/detector"), b"{}", True),
        ]:
            assert a.publish(topic, payload, retain=retain) == 0, topic
            assert ops.wait(topic), f"normal traffic {topic} did not arrive"
        assert not ops.received(d("cam-b", "state"))
        assert not ops.received(d("cam-a", "cmd/restart/self"))
        assert not ops.received(f"{ROOT}/f/fleet-a/heartbeat")
        assert not a.received(d("cam-a", "cmd/restart/self"))

        # Commands: each device reads its own, never another's.
        ops.publish(d("cam-b", "cmd/restart/x1"), b"{}")
        ops.publish(d("cam-a", "cmd/ping/x2"), b"{}")
        assert a.wait(d("cam-a", "cmd/ping/x2"))
        assert b.wait(d("cam-b", "cmd/restart/x1"))
        assert not a.received(d("cam-b", "cmd/restart/x1"))

        # Fleet topics (deployments, chunk streams): its own fleet only.
        ops.publish(f"{ROOT}/f/fleet-b/deploy/detector", b"manifest-b", retain=True)
        ops.publish(f"{ROOT}/f/fleet-a/xfer/dep-1/s", b"chunk")
        ops.publish(f"{ROOT}/f/fleet-a/deploy/detector", b"manifest-a", retain=True)
        assert a.wait(f"{ROOT}/f/fleet-a/deploy/detector")
        assert a.received(f"{ROOT}/f/fleet-a/xfer/dep-1/s") == [b"chunk"]
        assert b.wait(f"{ROOT}/f/fleet-b/deploy/detector")
        assert not a.received(f"{ROOT}/f/fleet-b/deploy/detector")
        assert not b.received(f"{ROOT}/f/fleet-a/deploy/detector")

        # Another device's state, even retained, is not readable by a device.
        b.subscribe(d("cam-a", "state"))
        time.sleep(0.3)
        assert not b.received(d("cam-a", "state"))
    finally:
        for client in (ops, a, b):
            client.close()


def test_wrong_password_and_anonymous_refused(secured: MosquittoBroker) -> None:
    bad = Client(secured.port, "cam-a", "wrong")
    assert bad.rc is not None
    assert bad.rc.is_failure
    bad.close()
    anonymous = Client(secured.port, "", "")
    assert anonymous.rc is not None
    assert anonymous.rc.is_failure
    anonymous.close()


def test_render_rejects_unsafe_names(capsys) -> None:
    with pytest.raises(ValueError, match="not a safe topic name"):
        render_acl("x", ROOT, [], [("cam-a\ntopic readwrite #", "f")])
    with pytest.raises(ValueError, match="not a safe topic name"):
        render_acl("x", "ea/#", [], [])
    assert render_main([str(TEMPLATE), "--device", "cam-9:lab", "--operator", "ops"]) == 0
    out = capsys.readouterr().out
    assert "user cam-9\ntopic read ea/v1/f/lab/#" in out
    assert "pattern read ea/v1/d/%u/cmd/#" in out
    assert "${" not in out
