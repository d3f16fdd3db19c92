"""The device's MQTT link: the only module that imports paho for it.

One thread (``mqtt-link``) owns the connection: it builds a fresh paho client per
attempt (so no paho-level in-flight state leaks between sessions; the outbox is the
source of truth for redelivery), connects, runs the network loop, and on loss waits a
capped full-jitter backoff that resets only after the link was up ``stable_after_s``.
Every connection attempt gets a new session number, persisted in the state dir, used in
both the last will and the birth message so a late will from an old session is ignorable.
paho callbacks never raise: each one catches, logs and returns.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.clock import Clock, SystemClock
from agent.config.base import resolve_secret
from agent.config.uplink import MqttConfig
from agent.errors import TransportError
from agent.log import get_logger
from agent.retry import Backoff
from agent.uplink.routes import MessageCallback, Routes
from agent.uplink.session import next_session, read_session
from agent.uplink.sockets import disable_nagle
from agent.uplink.topics import Topics

log = get_logger(__name__)

AckListener = Callable[[int, int, bool], None]  # generation, mid, ok
# CONNACK/DISCONNECT reason codes that mean "come back later" (MQTT 5 names; 3.1.1 rc 3).
BUSY_REASONS = frozenset(
    {"Server busy", "Quota exceeded", "Connection rate exceeded", "Server unavailable"}
)
SESSION_EXPIRY_S = 7 * 86400


class LinkDownError(TransportError):
    """Publish attempted while the link is not connected."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """Handle of one publish: ``wait`` blocks until the broker acknowledged it (QoS 1)."""

    mid: int
    _info: mqtt.MQTTMessageInfo

    def wait(self, timeout_s: float) -> bool:
        try:
            self._info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        return self._info.is_published()


def _safe(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Wrap a paho callback so nothing it raises reaches paho's thread."""

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        def wrapped(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                log.exception("mqtt_callback_failed", callback=name, error=str(exc))

        return wrapped

    return deco


class Link:
    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        state_dir: Path,
        stop: threading.Event,
        *,
        birth_extra: Callable[[], dict[str, Any]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.state_dir = state_dir
        self._stop = stop
        self._birth_extra = birth_extra or dict
        self._clock = clock or SystemClock()
        parts = urlsplit(cfg.url)
        self.url = cfg.url
        self._tls = parts.scheme == "mqtts"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (8883 if self._tls else 1883)
        self.backoff = Backoff(base_s=cfg.reconnect_min_s, cap_s=cfg.reconnect_max_s)
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._busy = False
        self._routes = Routes()
        # Filters dropped while the link was down: the persistent broker session still has
        # them, so they are unsubscribed on the next connect. Guarded by the routes' lock.
        self._unsubs: set[str] = set()
        self._ack_listeners: list[AckListener] = []
        self.generation = 0
        self.session = 0
        self.attempts = 0
        self._thread: threading.Thread | None = None

    # --- public API -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Delivery:
        """Publish now; raises LinkDownError when not connected. Not queued across sessions."""
        client = self._client
        if client is None or not self.connected:
            raise LinkDownError("mqtt link is down", topic=topic)
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkDownError(f"publish failed: {mqtt.error_string(info.rc)}", topic=topic)
        return Delivery(info.mid, info)

    def subscribe(self, topic_filter: str, callback: MessageCallback) -> None:
        """Register ``callback(topic, payload)``; (re)subscribed at QoS 1 on every connect.

        Callbacks run on paho's thread: keep them short and non-blocking. QoS 1 means a
        message may arrive twice (after a reconnect): callbacks must be idempotent.
        """
        with self._routes.lock:
            self._routes.add(topic_filter, callback)
            self._unsubs.discard(topic_filter)
        client = self._client
        if client is not None and self.connected:
            client.subscribe(topic_filter, qos=1)

    def unsubscribe(self, topic_filter: str) -> None:
        """Stop delivering ``topic_filter`` (at once, locally) and UNSUBSCRIBE at the broker.

        Sent now when connected, else on the next connect (the session is persistent).
        """
        with self._routes.lock:
            self._routes.remove(topic_filter)
            self._unsubs.add(topic_filter)
        client = self._client
        if client is not None and self.connected:
            rc, _mid = client.unsubscribe(topic_filter)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                with self._routes.lock:
                    if topic_filter not in self._routes:
                        self._unsubs.discard(topic_filter)

    def refresh_birth(self) -> bool:
        """Publish the retained birth ``state`` again (e.g. once ``models`` is known); sent?"""
        client = self._client
        if client is None or not self.connected:
            return False
        info = client.publish(self.topics.state, self._birth_payload(), qos=1, retain=True)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def add_ack_listener(self, listener: AckListener) -> None:
        """``listener(generation, mid, ok)`` on paho's thread; must not block or take locks."""
        self._ack_listeners.append(listener)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish offline, disconnect, join. Call after the shared stop event is set."""
        self._stop.set()
        client = self._client
        if client is not None and self.connected:
            try:
                # A clean stop knows its time (the will, set at connect, does not).
                payload = self._offline_payload(ts=round(self._clock.wall_s(), 3))
                info = client.publish(self.topics.state, payload, qos=1, retain=True)
                info.wait_for_publish(min(timeout_s, 2.0))
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt_offline_publish_failed", error=str(exc))
            client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # --- connection loop --------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            up_since = self._attempt()
            if self._stop.is_set():
                break
            if up_since is not None and self._clock.monotonic_s() - up_since >= (
                self.cfg.stable_after_s
            ):
                self.backoff.reset()
            delay = self.backoff.next_delay_s()
            if self._busy:
                delay += self.cfg.busy_backoff_s
            log.info("mqtt_reconnect_wait", delay_s=round(delay, 2), busy=self._busy)
            self._stop.wait(delay)

    def _attempt(self) -> float | None:
        """One connection: returns when it ends; the monotonic time it came up, or None."""
        self.attempts += 1
        self._busy = False
        self._lost.clear()
        try:
            self.session = next_session(self.state_dir)
        except OSError as exc:
            # A full state disk must not kill the link thread: count on in memory (a consumer
            # still orders wills by session; the file catches up once it can be written).
            self.session = max(self.session, read_session(self.state_dir)) + 1
            log.warning("mqtt_session_persist_failed", error=str(exc), session=self.session)
        try:
            client = self._make_client()
            log.info(
                "mqtt_connect_attempt", url=self.url, attempt=self.attempts, session=self.session
            )
            self._connect(client)
        except (OSError, ssl.SSLError, ValueError, TransportError) as exc:
            log.warning("mqtt_connect_failed", url=self.url, attempt=self.attempts, error=str(exc))
            return None
        self._client = client
        up_since: float | None = None
        while not self._stop.is_set() and not self._lost.is_set():
            rc = client.loop(timeout=0.2)
            if self.connected and up_since is None:
                up_since = self._clock.monotonic_s()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        # On shutdown keep the network loop running while connected, so the final flush
        # and stop()'s offline message still go out; stop() disconnects.
        while self._connected.is_set():
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        self._connected.clear()
        return up_since

    def _connect(self, client: mqtt.Client) -> None:
        props = None
        if self.cfg.protocol == "5":
            # paho's Properties constructor has no annotations.
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            client.connect(
                self._host,
                self._port,
                keepalive=self.cfg.keepalive_s,
                clean_start=False,
                properties=props,
            )
        else:
            client.connect(self._host, self._port, keepalive=self.cfg.keepalive_s)

    def _make_client(self) -> mqtt.Client:
        v5 = self.cfg.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.topics.device,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        if self.cfg.username:
            client.username_pw_set(
                self.cfg.username, resolve_secret(self.cfg.password, "mqtt.password") or None
            )
        if self._tls:
            client.tls_set_context(self._ssl_context())
        client.will_set(self.topics.state, self._offline_payload(), qos=1, retain=True)
        client.on_socket_open = disable_nagle
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cfg.ca or None)
        if self.cfg.cert:
            password = resolve_secret(self.cfg.key_password, "mqtt.key_password") or None
            ctx.load_cert_chain(self.cfg.cert, self.cfg.key or None, password=password)
        return ctx

    def _offline_payload(self, ts: float | None = None) -> bytes:
        # The fleet is named in every state (birth and will): `edge-fleet status --fleet`.
        doc: dict[str, Any] = {"online": False, "session": self.session, "fleet": self.topics.fleet}
        if ts is not None:
            doc["ts"] = ts
        return json.dumps(doc).encode()

    def _birth_payload(self) -> bytes:
        doc = {
            "online": True,
            "session": self.session,
            "ts": round(self._clock.wall_s(), 3),
            "fleet": self.topics.fleet,
        }
        try:
            doc.update(self._birth_extra())
        except Exception as exc:
            log.warning("mqtt_birth_extra_failed", error=str(exc))
        return json.dumps(doc, sort_keys=True, default=str).encode()

    # --- paho callbacks (paho's thread; never raise) ----------------------------------

    @_safe("on_connect")
    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._busy = str(reason) in BUSY_REASONS
            log.warning("mqtt_connect_refused", url=self.url, reason=str(reason))
            self._lost.set()
            return
        client.publish(self.topics.state, self._birth_payload(), qos=1, retain=True)
        with self._routes.lock:
            filters = self._routes.filters()
            stale, self._unsubs = list(self._unsubs), set()
        for topic_filter in stale:
            client.unsubscribe(topic_filter)
        for topic_filter in filters:
            client.subscribe(topic_filter, qos=1)
        self.generation += 1
        self._connected.set()
        log.info("mqtt_connected", url=self.url, session=self.session, generation=self.generation)

    @_safe("on_disconnect")
    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        was_up = self.connected
        self._connected.clear()
        self._lost.set()
        if str(reason) in BUSY_REASONS:
            self._busy = True
        if was_up:
            log.warning("mqtt_disconnected", url=self.url, reason=str(reason))

    @_safe("on_message")
    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        for callback in self._routes.callbacks_for(msg.topic):
            try:
                callback(msg.topic, bytes(msg.payload))
            except Exception as exc:
                log.exception("mqtt_message_handler_failed", topic=msg.topic, error=str(exc))

    @_safe("on_publish")
    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        ok = not reason.is_failure
        for listener in self._ack_listeners:
            listener(self.generation, mid, ok)
