"""Home Assistant MQTT discovery: the device appears in Home Assistant by itself (issue 20).

Off by default (``[mqtt.homeassistant] enabled = true``). Follows Home Assistant's
discovery conventions: one retained config per entity on
``<discovery_prefix>/<component>/<node_id>/<object_id>/config``, each with a
``unique_id``, the same ``device`` block (so they group as one device) and an ``origin``.
Entities read the agent's existing topics, nothing is published twice:

- sensors from ``m/stats`` (fps per camera, inference ms p50 per slot, temperature, outbox
  depth) and ``health`` (status, an enum);
- a binary sensor per configured label from ``e/detection``: on when an event carries the
  label, off ``presence_off_s`` after the last one (Home Assistant's ``off_delay``; an event
  without the label renders nothing, which Home Assistant ignores);
- an ``image`` entity per camera on ``<root>/d/<dev>/snapshot/<camera>`` (raw JPEG,
  published by ``agent.uplink.snapshots``: on the ``snapshot`` command and every
  ``telemetry.snapshot_interval_s``);
- an ``update`` entity per model slot on ``<root>/d/<dev>/ha/update/<slot>`` (retained
  ``{"installed_version", "latest_version", "title"}``, the manifest versions from the
  update store), re-read every ``refresh_s``.

Availability is the agent's own birth/will: ``<root>/d/<dev>/state`` with
``value_json.online``. Configs are re-sent when Home Assistant announces itself online on
``<discovery_prefix>/status``. Everything goes through the outbox (retained, alarm class),
so it survives an outage like the rest of the retained state.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

from agent import __version__
from agent.config.root import AgentConfig
from agent.log import get_logger
from agent.uplink.classes import MsgClass, OutMessage
from agent.uplink.link import Link
from agent.uplink.outbox import Outbox
from agent.uplink.snapshots import snapshot_topic
from agent.uplink.topics import Topics

log = get_logger(__name__)

ORIGIN = {"name": "edge-agent", "sw_version": __version__}
AVAILABLE_TEMPLATE = "{{ 'online' if value_json.online else 'offline' }}"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# What the publisher needs from the daemon: a way to queue a message, and per slot the
# update store's view (``edge-agent update status --json``'s ``slots``).
Emit = Callable[[OutMessage], object]
UpdateState = Callable[[], dict[str, dict[str, Any]]]


def object_id(text: str) -> str:
    """A discovery topic level / object id: letters, digits, ``_`` and ``-`` only."""
    return _ID_UNSAFE.sub("_", text).strip("_") or "x"


def discovery(config: AgentConfig, topics: Topics, slots: list[str]) -> dict[str, dict[str, Any]]:
    """Every discovery config: topic → payload (pure; the same inputs give the same configs)."""
    ha = config.mqtt.homeassistant
    dev = config.device.id
    node = object_id(dev)
    device = {
        "identifiers": [f"edge_agent_{node}"],
        "name": dev,
        "manufacturer": "edge-agent",
        "model": config.device.profile,
        "sw_version": __version__,
    }
    availability = [
        {
            "topic": topics.state,
            "value_template": AVAILABLE_TEMPLATE,
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]
    configs: dict[str, dict[str, Any]] = {}

    def add(component: str, obj: str, name: str, **fields: Any) -> None:
        oid = object_id(obj)
        configs[f"{ha.discovery_prefix}/{component}/{node}/{oid}/config"] = {
            "name": name,
            # Entity ids follow from the device and entity names (object_id is deprecated).
            "unique_id": f"edge_agent_{node}_{oid}",
            "device": device,
            "origin": ORIGIN,
            "availability": availability,
            "qos": 0 if fields.get("state_topic") == topics.stats else 1,  # stats are QoS 0
            **fields,
        }

    for camera in config.cameras:
        add(
            "sensor",
            f"fps_{camera.name}",
            f"{camera.name} inferred fps",
            state_topic=topics.stats,
            value_template=f"{{{{ value_json.cameras[{json.dumps(camera.name)}].inferred_fps }}}}",
            unit_of_measurement="fps",
            state_class="measurement",
            icon="mdi:camera-timer",
        )
    for model in config.models:
        add(
            "sensor",
            f"inference_ms_{model.slot}",
            f"{model.slot} inference p50",
            state_topic=topics.stats,
            value_template=(
                f"{{{{ value_json.models[{json.dumps(model.slot)}].inference_ms.p50 }}}}"
            ),
            unit_of_measurement="ms",
            device_class="duration",
            state_class="measurement",
        )
    add(
        "sensor",
        "temperature",
        "Temperature",
        state_topic=topics.stats,
        value_template="{{ value_json.process.max_temperature_c }}",
        unit_of_measurement="°C",
        device_class="temperature",
        state_class="measurement",
    )
    add(
        "sensor",
        "outbox_depth",
        "Outbox depth",
        state_topic=topics.stats,
        value_template="{{ value_json.outbox.depth }}",
        unit_of_measurement="messages",
        state_class="measurement",
        entity_category="diagnostic",
    )
    add(
        "sensor",
        "health",
        "Health",
        state_topic=topics.health,
        value_template="{{ value_json.status }}",
        device_class="enum",
        options=["ok", "degraded", "down"],
        json_attributes_topic=topics.health,
        json_attributes_template="{{ value_json.components | tojson }}",
    )
    for label in ha.labels:
        add(
            "binary_sensor",
            f"present_{label}",
            f"{label} present",
            state_topic=topics.detection,
            value_template=(
                "{% if value_json.detections | selectattr('label', 'eq', "
                f"{json.dumps(label)}) | list | count > 0 %}}ON{{% endif %}}"
            ),
            payload_on="ON",
            payload_off="OFF",
            off_delay=ha.presence_off_s,
            device_class="occupancy",
        )
    for camera in config.cameras:
        # Raw JPEG bytes on image_topic (no image_encoding: not base64); see snapshots.py.
        add(
            "image",
            f"snapshot_{camera.name}",
            f"{camera.name} snapshot",
            image_topic=snapshot_topic(topics, camera.name),
            content_type="image/jpeg",
        )
    for slot in slots:
        add(
            "update",
            f"model_{slot}",
            f"{slot} model",
            state_topic=update_topic(topics, slot),
            entity_category="diagnostic",
            icon="mdi:brain",
        )
    return configs


def update_topic(topics: Topics, slot: str) -> str:
    return f"{topics.base}/ha/update/{object_id(slot)}"


def update_payload(slot: str, status: dict[str, Any]) -> dict[str, Any]:
    """The ``update`` entity's state from the slot's ``update status``: installed vs latest.

    A slot never updated shows installed ``shipped``; latest is the newest manifest the
    device has been offered (the journal's), so Home Assistant shows an update as available
    while a newer manifest is being installed, or after one was refused.
    """
    active = status.get("active") or {}
    installed = active.get("manifest_version")
    offered = status.get("manifest_version")
    installed_text = f"v{installed}" if isinstance(installed, int) else "shipped"
    latest = max((v for v in (installed, offered) if isinstance(v, int)), default=None)
    doc: dict[str, Any] = {
        "installed_version": installed_text,
        "latest_version": f"v{latest}" if latest is not None else installed_text,
        "title": f"{slot} model",
    }
    if active.get("release") is not None:
        doc["release_summary"] = f"release {active['release']}"
    return doc


class HomeAssistant:
    """Publishes the discovery configs and the update entities' state from its own thread."""

    def __init__(
        self,
        config: AgentConfig,
        topics: Topics,
        emit: Emit,
        update_state: UpdateState,
        stop: threading.Event,
    ) -> None:
        self._config = config
        self._topics = topics
        self._emit = emit
        self._update_state = update_state
        self._stop = stop
        self._resend = threading.Event()
        self._sent_updates: dict[str, bytes] = {}
        self._thread = threading.Thread(target=self._run, name="homeassistant", daemon=True)
        self.slots = sorted({m.slot for m in config.models})

    @property
    def status_topic(self) -> str:
        return f"{self._config.mqtt.homeassistant.discovery_prefix}/status"

    def on_status(self, _topic: str, payload: bytes) -> None:
        """Home Assistant (re)started: send the configs again (runs on paho's thread)."""
        if payload.strip() == b"online":
            self._resend.set()

    def start(self) -> None:
        self._resend.set()
        self._thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        self._thread.join(timeout_s)

    def publish_configs(self) -> int:
        configs = discovery(self._config, self._topics, self.slots)
        for topic, doc in configs.items():
            self._put(topic, json.dumps(doc, sort_keys=True, ensure_ascii=False).encode())
        log.info("homeassistant_discovery_published", entities=len(configs))
        return len(configs)

    def publish_updates(self) -> None:
        try:
            states = self._update_state()
        except Exception as exc:  # a store being written: next round
            log.warning("homeassistant_update_state_failed", error=str(exc))
            return
        for slot in self.slots:
            payload = json.dumps(update_payload(slot, states.get(slot, {})), sort_keys=True)
            if self._sent_updates.get(slot) != payload.encode():
                self._sent_updates[slot] = payload.encode()
                self._put(update_topic(self._topics, slot), payload.encode())

    def _put(self, topic: str, payload: bytes) -> None:
        self._emit(OutMessage(topic, payload, 1, retain=True, cls=MsgClass.ALARM))

    def _run(self) -> None:
        refresh_s = self._config.mqtt.homeassistant.refresh_s
        while not self._stop.is_set():
            try:
                if self._resend.is_set():
                    self._resend.clear()
                    self.publish_configs()
                    self._sent_updates.clear()  # states follow their configs
                self.publish_updates()
            except Exception:
                log.exception("homeassistant_publish_failed")
            waited = 0.0
            while waited < refresh_s and not self._stop.is_set() and not self._resend.wait(0.2):
                waited += 0.2


def start_homeassistant(
    config: AgentConfig,
    topics: Topics,
    outbox: Outbox,
    link: Link,
    *,
    update_state: UpdateState,
    stop: threading.Event,
) -> Callable[[], None]:
    """The daemon's hook: publish through the outbox, follow Home Assistant's status topic."""
    ha = HomeAssistant(config, topics, outbox.put, update_state, stop)
    link.subscribe(ha.status_topic, ha.on_status)
    ha.start()
    return ha.join
