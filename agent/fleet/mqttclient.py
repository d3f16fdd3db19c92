"""The operator tool's MQTT client: the one module of ``agent.fleet`` that imports paho.

A thin, thread-safe wrapper: connect from a broker URL (``mqtt://``/``mqtts://``,
optional ``user:pass@``), publish, subscribe with ``callback(topic, payload)`` and
re-subscribe after paho reconnects by itself. Failures become ``TransportError``s.
"""

from __future__ import annotations

import itertools
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import BrokerUnavailableError, TransportError
from agent.log import get_logger
from agent.uplink.routes import MessageCallback, Routes
from agent.uplink.sockets import disable_nagle

log = get_logger(__name__)

_ids = itertools.count()
MAX_SUBACKS = 256
# (topic, payload, retained): ``retained`` is True for a message the broker held from before
# the subscription, False for one published while we listen (MQTT forwards with retain 0).
FlaggedCallback = Callable[[str, bytes, bool], None]
SHARE_PREFIX = "$share/"


def route_of(topic_filter: str) -> str:
    """The filter a subscription's messages match: ``$share/<group>/F`` delivers topics of F."""
    if topic_filter.startswith(SHARE_PREFIX):
        _group, _, rest = topic_filter[len(SHARE_PREFIX) :].partition("/")
        return rest
    return topic_filter


@dataclass(frozen=True, slots=True)
class BrokerTls:
    ca: str = ""
    cert: str = ""
    key: str = ""


class FleetClient:
    def __init__(
        self,
        url: str,
        *,
        tls: BrokerTls | None = None,
        client_id: str = "",
        protocol: str = "5",
        max_inflight: int = 100,
        no_delay: bool = True,
        username: str = "",
        password: str = "",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise BrokerUnavailableError("broker URL must be mqtt://host:port or mqtts://", url=url)
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        v5 = protocol == "5"
        self._v5 = v5
        self.client_id = client_id or f"edge-fleet-{os.getpid()}-{next(_ids)}"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.reconnect_delay_set(1, 5)
        if username:
            self._client.username_pw_set(username, password or None)
        elif parts.username:
            self._client.username_pw_set(
                unquote(parts.username), unquote(parts.password) if parts.password else None
            )
        if parts.scheme == "mqtts":
            tls = tls or BrokerTls()
            ctx = ssl.create_default_context(cafile=tls.ca or None)
            if tls.cert:
                ctx.load_cert_chain(tls.cert, tls.key or None)
            self._client.tls_set_context(ctx)
        self._routes = Routes()
        # Route filter -> the filter subscribed on the wire, where they differ ($share/...).
        self._wire: dict[str, str] = {}
        # topic -> matching callbacks; paho's matcher is slow per message on a chunk stream.
        self._connected = threading.Event()
        self._refused = ""
        self._retained_now = False  # the retain flag of the message being dispatched
        self._subacks: dict[int, threading.Event] = {}
        if no_delay:
            self._client.on_socket_open = disable_nagle
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def connect(self, timeout_s: float = 10.0) -> FleetClient:
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerUnavailableError(
                f"cannot reach broker {self.url}: {exc}", url=self.url
            ) from exc
        self._client.loop_start()
        deadline = time.monotonic() + timeout_s
        # A refusal (bad password, ACL) is final: no point waiting for paho's retries.
        while not self._connected.wait(0.05) and not self._refused and time.monotonic() < deadline:
            pass
        if not self._connected.is_set():
            self.close()
            cause = f": {self._refused}" if self._refused else ""
            raise BrokerUnavailableError(
                f"broker {self.url} did not accept us{cause}", url=self.url
            )
        return self

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def close(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
        self._connected.clear()

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish failed: {mqtt.error_string(info.rc)}", topic=topic)
        return info

    def publish_wait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout_s: float = 10
    ) -> None:
        """Publish and wait for the broker's acknowledgement (retained manifests, heartbeats)."""
        info = self.publish(topic, payload, qos=qos, retain=retain)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise TransportError(f"publish to {topic} failed: {exc}", topic=topic) from exc
        if not info.is_published():
            raise TransportError(f"publish to {topic} not acknowledged", topic=topic)

    def subscribe(self, topic_filter: str, callback: MessageCallback) -> None:
        """``topic_filter`` may be a shared subscription, ``$share/<group>/<filter>``."""
        route = route_of(topic_filter)
        if route != topic_filter:
            self._wire[route] = topic_filter
        self._routes.add(route, callback)
        if self.connected:
            self._client.subscribe(topic_filter, qos=1)

    def subscribe_flagged(self, topic_filter: str, callback: FlaggedCallback) -> None:
        """Like ``subscribe``, and the callback learns whether the message was retained."""
        self.subscribe(topic_filter, lambda t, p: callback(t, p, self._retained_now))

    def retained(self, topic: str, timeout_s: float = 5.0) -> bytes | None:
        """The message retained on ``topic`` now (None: none)."""
        return self.retained_messages(topic, timeout_s).get(topic)

    def retained_messages(
        self, topic_filter: str, timeout_s: float = 5.0, grace_s: float = 0.3
    ) -> dict[str, bytes]:
        """Every message retained under ``topic_filter`` now, read once and unsubscribed."""
        got: dict[str, bytes] = {}
        lock = threading.Lock()

        def on_message(topic: str, payload: bytes) -> None:
            if self._retained_now and payload:
                with lock:
                    got[topic] = payload

        self._routes.add(topic_filter, on_message)
        mid: int | None = None
        try:
            _rc, mid = self._client.subscribe(topic_filter, qos=1)
            # The broker sends retained messages right behind its SUBACK.
            if mid is not None and self._subacks.setdefault(mid, threading.Event()).wait(timeout_s):
                threading.Event().wait(grace_s)
        finally:
            if mid is not None:
                self._subacks.pop(mid, None)
            self.unsubscribe(topic_filter)
        with lock:
            return dict(got)

    def unsubscribe(self, topic_filter: str) -> None:
        route = route_of(topic_filter)
        self._routes.remove(route)
        wire = self._wire.pop(route, topic_filter)
        if self.connected:
            self._client.unsubscribe(wire)

    # paho callbacks: never raise into paho's thread.

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refused = f"CONNACK refused: {reason}"
            log.warning("fleet_mqtt_refused", url=self.url, reason=str(reason))
            return
        for topic_filter in self._routes.filters():
            client.subscribe(self._wire.get(topic_filter, topic_filter), qos=1)
        self._connected.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if self._connected.is_set():
            log.info("fleet_mqtt_disconnected", url=self.url, reason=str(reason))
        self._connected.clear()

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: object, mid: int, *_rest: object
    ) -> None:
        if len(self._subacks) > MAX_SUBACKS:  # acks nobody waits for (plain subscribes)
            self._subacks.clear()
        self._subacks.setdefault(mid, threading.Event()).set()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        # paho dispatches from its one network thread: the flag is read within the callback.
        self._retained_now = bool(msg.retain)
        for callback in self._routes.callbacks_for(msg.topic):
            try:
                callback(msg.topic, bytes(msg.payload))
            except Exception as exc:
                log.exception("fleet_mqtt_handler_failed", topic=msg.topic, error=str(exc))
