"""A plain paho subscriber that records what a test's broker delivers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Recorder:
    def __init__(
        self,
        url: str,
        topic_filter: str,
        client_id: str = "recorder",
        clean: bool = True,
        **tls: str,
    ) -> None:
        parts = urlsplit(url)
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean
        )
        if tls.get("ca"):
            self.client.tls_set(
                ca_certs=tls.get("ca"), certfile=tls.get("cert"), keyfile=tls.get("key")
            )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(topic_filter, qos=1)
        if tls.get("username"):
            self.client.username_pw_set(tls["username"], tls.get("password"))
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()
        assert subscribed.wait(5), "recorder could not subscribe"

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
