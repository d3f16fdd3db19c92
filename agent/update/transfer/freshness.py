"""Heartbeat handling: keep the newest valid heartbeat, raise ``freeze_suspected`` when it expires.

Inference is never touched: the alarm is a retained message on ``a/freeze_suspected``,
cleared with an empty retained message once a fresh heartbeat arrives. A heartbeat
naming a manifest newer than the device's floor makes it ask for the deployment
again (re-subscribing re-delivers the retained manifest).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Protocol

from agent.clock import Clock
from agent.errors import AgentError, UpdateError
from agent.fsutil import atomic_write_bytes
from agent.log import get_logger
from agent.update.store.installer import Installer
from agent.update.transfer.heartbeat import Heartbeat, verify_heartbeat
from agent.update.transfer.wire import Topics
from agent.update.trust.policy import channel
from agent.update.trust.root import format_time

log = get_logger(__name__)
ALARM = "freeze_suspected"


class _Bus(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object: ...

    def subscribe(self, topic_filter: str, callback: Any) -> None: ...


class _Settings(Protocol):
    @property
    def device_id(self) -> str: ...

    @property
    def fleet(self) -> str: ...


class FreshnessWatch:
    def __init__(
        self,
        bus: _Bus,
        topics: Topics,
        *,
        settings: _Settings,
        installer: Installer,
        path: Path,
        clock: Clock,
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._settings = settings
        self._installer = installer
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._incoming: bytes | None = None
        self.newest: Heartbeat | None = None
        self.alarm_active: bool | None = None  # None: unknown (never published)
        self.refetch: list[str] = []
        self.on_refetch: Any = None  # set by the service: callable(slot)
        try:
            self._accept(path.read_bytes(), persist=False)
        except (OSError, UpdateError):
            pass

    def on_message(self, _topic: str, payload: bytes) -> None:
        if payload:
            with self._lock:
                self._incoming = payload

    def _accept(self, data: bytes, persist: bool) -> None:
        beat = verify_heartbeat(data, self._installer.trust.load_root(), self._settings.fleet)
        if self.newest is not None and beat.version <= self.newest.version:
            return  # an older (or the same) heartbeat: a replay cannot reset freshness
        self.newest = beat
        if persist:
            atomic_write_bytes(self._path, data, mode=0o600)
        state = self._installer.trust.load_state()
        for slot, latest in beat.latest.items():
            floor = state.floors.get(channel(self._settings.fleet, slot))
            if floor is None or floor.manifest_version < latest.manifest_version:
                log.info("heartbeat_names_newer", slot=slot, version=latest.manifest_version)
                self.refetch.append(slot)

    def stale(self) -> str | None:
        """Why new deployments would be refused under ``block_on_stale_heartbeat``; None: fresh."""
        if self.newest is None:
            return "no signed fleet heartbeat received yet"
        if self.newest.expired(self._clock.wall_s()):
            return (
                f"newest fleet heartbeat (v{self.newest.version}) expired at "
                f"{format_time(self.newest.expires_s)}"
            )
        return None

    def check(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, None
        if incoming is not None:
            try:
                self._accept(incoming, persist=True)
            except UpdateError as exc:
                log.warning("heartbeat_rejected", reason=exc.reason.value, error=exc.message)
        while self.refetch:
            slot = self.refetch.pop()
            if self.on_refetch is not None:
                self.on_refetch(slot)
        if self.newest is None:
            return
        now = self._clock.wall_s()
        expired = self.newest.expired(now)
        if expired == self.alarm_active:
            return
        topic = self._topics.alarm(self._settings.device_id, ALARM)
        payload = b""
        if expired:
            payload = json.dumps(
                {
                    "severity": "warning",
                    "text": "newest fleet heartbeat expired at "
                    f"{format_time(self.newest.expires_s)}; updates may be withheld",
                    "since": format_time(self.newest.expires_s),
                    "heartbeat_version": self.newest.version,
                },
                sort_keys=True,
            ).encode("utf-8")
            log.warning("freeze_suspected", heartbeat_version=self.newest.version)
        try:
            self._bus.publish(topic, payload, qos=1, retain=True)
        except AgentError as exc:
            log.debug("freeze_alarm_unsent", error=str(exc))
            return
        self.alarm_active = expired
