"""What the update service is given: the MQTT link it needs, its settings, and its one signal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Bus(Protocol):
    """What the service needs from the device's MQTT link (``agent.uplink.link.Link``)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object: ...

    def subscribe(self, topic_filter: str, callback: Any) -> None: ...

    def unsubscribe(self, topic_filter: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    device_id: str
    fleet: str
    window: int = 32
    stall_s: float = 5.0
    deadline_s: float = 3600.0
    progress_interval_s: float = 1.0
    freshness_check_s: float = 30.0
    # Unverifiable input (junk on deploy/trust topics) republishes its alarm at most this often.
    unverified_alarm_interval_s: float = 60.0
    # Fleet policy: no new deployment while the signed heartbeat is stale (issue 18.9).
    block_on_stale_heartbeat: bool = False
    # Settle an install interrupted by a restart on this thread, not the daemon's start-up.
    recover_on_start: bool = False


class Superseded(Exception):
    """A newer deployment for the same slot arrived while this one was downloading."""
