"""Message classes of the outbox: priority order, TTLs, and the message records."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agent.config.uplink import OutboxConfig


class MsgClass(enum.IntEnum):
    """Lower value = higher priority: sent first, evicted last."""

    ALARM = 0  # alarms, operation states, health
    DETECTION = 1
    STATS = 2

    @property
    def label(self) -> str:
        return self.name.lower()


def ttl_s(cfg: OutboxConfig, cls: MsgClass) -> float:
    return {
        MsgClass.ALARM: cfg.alarm_ttl_s,
        MsgClass.DETECTION: cfg.detection_ttl_s,
        MsgClass.STATS: cfg.stats_ttl_s,
    }[cls]


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    cls: MsgClass

    @property
    def size(self) -> int:
        # The row's payload and topic plus a rough per-row overhead of SQLite.
        return len(self.payload) + len(self.topic) + 64


@dataclass(frozen=True, slots=True)
class StoredMessage:
    row_id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    cls: MsgClass
    created_s: float
