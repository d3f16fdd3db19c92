"""The latest snapshot of each camera as a raw JPEG on ``<base>/snapshot/<camera>`` (issue 20).

What Home Assistant's MQTT ``image`` entity and ``edge-fleet console`` read: the op state of
the ``snapshot`` command carries its JPEG as base64 inside JSON, which neither can show.
Published when Home Assistant discovery is on or ``telemetry.snapshot_interval_s`` is set:
after each successful ``snapshot`` command (the camera it asked for) and every interval
(every camera), with the boxes of the camera's latest detections drawn when they are
fresh (``EVENT_FRESH_S``).

Retained, so Home Assistant or a console that starts later shows the latest image at once;
through the outbox as a *stats* message: the newest retained message supersedes an
undelivered older one of the same topic, so an outage queues one image per camera at most,
and the lowest class never evicts alarms or detections. Bounded: scaled to
``snapshot_max_width_px``, then re-encoded smaller until it fits ``snapshot_max_bytes``
(also capped at a quarter of the outbox budget). The broker's message size limit
(Mosquitto ``message_size_limit``/``max_packet_size``) must allow that budget.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.config.root import AgentConfig
from agent.errors import AgentError
from agent.events.types import DetectionEvent, EventSink
from agent.log import get_logger
from agent.uplink.classes import MsgClass, OutMessage
from agent.uplink.commands import Handler
from agent.uplink.snapshot import encode_bounded
from agent.uplink.topics import Topics

log = get_logger(__name__)

BOX_BGR = (0, 255, 0)
EVENT_FRESH_S = 2.0  # boxes older than this are not drawn on a newer frame

Emit = Callable[[OutMessage], object]
LatestFrame = Callable[[str], "npt.NDArray[np.uint8] | None"]


def snapshot_topic(topics: Topics, camera: str) -> str:
    # Camera names are 1-32 of a-z 0-9 _ - (config validation): a safe topic level.
    return f"{topics.base}/snapshot/{camera}"


def enabled(config: AgentConfig) -> bool:
    return config.mqtt.homeassistant.enabled or config.telemetry.snapshot_interval_s > 0


def budget_bytes(config: AgentConfig) -> int:
    return min(config.telemetry.snapshot_max_bytes, config.outbox.max_bytes // 4)


def fresh(event: DetectionEvent | None, now_s: float) -> DetectionEvent | None:
    """The event if its boxes still belong on the newest frame (events come only when
    something is detected, so the last one stays after the object has gone)."""
    if event is None or now_s - event.ts > EVENT_FRESH_S:
        return None
    return event


def draw_boxes(frame: npt.NDArray[np.uint8], event: DetectionEvent | None) -> Any:
    """A copy of the frame with the event's boxes and labels drawn (also the live view's)."""
    import cv2  # noqa: PLC0415 - OpenCV comes with the inference extras

    image: Any = frame.copy()
    for det in event.detections if event is not None else ():
        x1, y1, x2, y2 = (round(v) for v in det.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), BOX_BGR, 3)
        text = f"{det.label} {det.score:.2f}"
        cv2.putText(image, text, (x1, max(14, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, BOX_BGR, 2)
    return image


class LatestEvents:
    """Each camera's latest detection event, kept by tapping the event sink (for the boxes;
    also the live view's)."""

    def __init__(self) -> None:
        self._events: dict[str, DetectionEvent] = {}
        self._lock = threading.Lock()

    def tap(self, sink: EventSink) -> EventSink:
        """``sink`` that also keeps each camera's latest event."""

        def tapped(event: DetectionEvent) -> None:
            with self._lock:
                self._events[event.camera] = event
            sink(event)

        return tapped

    def get(self, camera: str) -> DetectionEvent | None:
        with self._lock:
            return self._events.get(camera)


def render(
    frame: npt.NDArray[np.uint8],
    event: DetectionEvent | None,
    max_width_px: int,
    max_bytes: int,
    quality: int,
) -> bytes:
    """The frame with the event's boxes drawn, scaled to ``max_width_px``, as a JPEG within
    ``max_bytes`` (pure; CommandError(too_large) when nothing fits)."""
    import cv2  # noqa: PLC0415 - OpenCV comes with the inference extras

    image = draw_boxes(frame, event)
    height, width = image.shape[:2]
    if width > max_width_px:
        size = (max_width_px, max(1, round(height * max_width_px / width)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return encode_bounded(image, max_bytes, quality).jpeg


class SnapshotPublisher:
    """Keeps each camera's latest event (for the boxes) and publishes snapshots."""

    def __init__(
        self,
        config: AgentConfig,
        topics: Topics,
        emit: Emit,
        latest_frame: LatestFrame,
        *,
        now_s: Callable[[], float],
        stop: threading.Event,
    ) -> None:
        self._config = config
        self._topics = topics
        self._emit = emit
        self._latest_frame = latest_frame
        self._now_s = now_s
        self._stop = stop
        self._events = LatestEvents()
        self._thread: threading.Thread | None = None
        self.published = 0
        self.failed = 0

    def tap(self, sink: EventSink) -> EventSink:
        return self._events.tap(sink)

    def publish(self, camera: str) -> str | None:
        """Publish ``camera``'s snapshot now; its topic, or None (no frame yet, or failed)."""
        frame = self._latest_frame(camera)
        if frame is None:
            return None
        event = self._events.get(camera)
        tel = self._config.telemetry
        try:
            jpeg = render(
                frame,
                fresh(event, self._now_s()),
                tel.snapshot_max_width_px,
                budget_bytes(self._config),
                tel.snapshot_quality,
            )
        except AgentError as exc:
            self.failed += 1
            log.warning("snapshot_publish_failed", camera=camera, error=str(exc))
            return None
        topic = snapshot_topic(self._topics, camera)
        self._emit(OutMessage(topic, jpeg, 1, retain=True, cls=MsgClass.STATS))
        self.published += 1
        return topic

    def wrap_command(self, handler: Handler) -> Handler:
        """The ``snapshot`` command's handler that also publishes the camera it answered for
        (its result names the topic as ``image_topic``)."""

        def snapshot(req: dict[str, Any]) -> dict[str, Any]:
            result = handler(req)  # validates the request; raises on failure
            topic = self.publish(str(result.get("camera", "")))
            if topic is not None:
                result["image_topic"] = topic
            return result

        return snapshot

    def start(self) -> None:
        if self._config.telemetry.snapshot_interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
            self._thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        interval_s = self._config.telemetry.snapshot_interval_s
        wait_s = min(1.0, interval_s)  # the first images as soon as the cameras have frames
        while not self._stop.wait(wait_s):
            done = [self._publish_logged(camera.name) for camera in self._config.cameras]
            wait_s = interval_s if all(done) else min(1.0, interval_s)

    def _publish_logged(self, camera: str) -> bool:
        try:
            return self.publish(camera) is not None
        except Exception:  # a bad frame must not end the loop
            log.exception("snapshot_publish_failed", camera=camera)
            return False
