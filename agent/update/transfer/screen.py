"""Unverifiable input on the update topics: told apart from signed work, counted, alarmed.

Anyone with publish rights on the broker can put bytes on ``deploy/<slot>`` or
``trust/root``; only the release (root) keys can make them authentic. Input whose
signatures do not verify must not change device state: it does not supersede a
transfer in progress, it is not reported under the deployment id it claims (that
would overwrite a real deployment's retained op state) and it creates no retained
topic of its own. It is logged, counted (``UnverifiedInput.snapshot`` for stats) and
raises one retained alarm, ``a/unverified_input``, republished at most once per
``alarm_interval_s`` however fast the junk comes.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from agent.clock import Clock
from agent.errors import AgentError, Reason, UpdateError, VerificationError
from agent.log import get_logger
from agent.update.transfer.settings import Bus
from agent.update.transfer.wire import Topics
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import MANIFEST_PAYLOAD_TYPE, Manifest, parse_manifest
from agent.update.trust.root import (
    MAX_ROOT_BYTES,
    ROOT_PAYLOAD_TYPE,
    Root,
    format_time,
    parse_root,
)
from agent.update.trust.verify import MAX_ENVELOPE_BYTES

log = get_logger(__name__)

ALARM = "unverified_input"


def authentic_manifest(envelope_bytes: bytes, root: Root) -> Manifest:
    """The manifest when the trusted release keys signed these bytes; raises ``UpdateError``.

    Signatures only, no policy: a signed manifest that is expired, older or not for
    this device is still authentic (its id really names a deployment of this fleet).
    """
    envelope = parse_envelope(envelope_bytes, MAX_ENVELOPE_BYTES, "manifest")
    if envelope.payload_type != MANIFEST_PAYLOAD_TYPE:
        raise VerificationError(Reason.UNSIGNED, f"not a deployment: {envelope.payload_type!r}")
    root.require(envelope, "release")
    return parse_manifest(envelope.payload)


def offered_root_version(data: bytes) -> int:
    """The version a root envelope claims (unverified: ``walk`` checks every signature)."""
    envelope = parse_envelope(data, MAX_ROOT_BYTES, "root")
    if envelope.payload_type != ROOT_PAYLOAD_TYPE:
        raise VerificationError(Reason.UNSIGNED, f"not a root: {envelope.payload_type!r}")
    return parse_root(envelope.payload, data).version


def signed_manifest(envelope_bytes: bytes, root: Root) -> Manifest | None:
    try:
        return authentic_manifest(envelope_bytes, root)
    except UpdateError:
        return None


class UnverifiedInput:
    """Counts unverifiable messages and keeps the one alarm about them current (rate-limited)."""

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        device_id: str,
        clock: Clock,
        alarm_interval_s: float = 60.0,
    ) -> None:
        self._bus = bus
        self._topic = topics.alarm(device_id, ALARM)
        self._clock = clock
        self.alarm_interval_s = alarm_interval_s
        self._lock = threading.Lock()
        self.total = 0
        self.by_reason: dict[str, int] = {}
        self.alarms_published = 0
        self._last_alarm_s: float | None = None
        self._since = ""
        self._unlogged = 0

    def record(self, source: str, reason: Reason, detail: str) -> None:
        """One unverifiable message from ``source`` (a topic); logs and alarms rate-limited."""
        now = self._clock.monotonic_s()
        with self._lock:
            self.total += 1
            self.by_reason[reason.value] = self.by_reason.get(reason.value, 0) + 1
            due = self._last_alarm_s is None or now - self._last_alarm_s >= self.alarm_interval_s
            if not due:
                self._unlogged += 1
                return
            self._last_alarm_s = now
            suppressed, self._unlogged = self._unlogged, 0
            if not self._since:
                self._since = format_time(self._clock.wall_s())
            doc: dict[str, Any] = {
                "severity": "warning",
                "text": f"{self.total} unverifiable message(s) on update topics; last on {source}",
                "since": self._since,
                "count": self.total,
                "last_reason": reason.value,
                "by_reason": dict(self.by_reason),
            }
        log.warning(
            "unverified_input",
            source=source,
            reason=reason.value,
            detail=detail[:200],
            total=self.total,
            suppressed=suppressed,
        )
        try:
            self._bus.publish(
                self._topic, json.dumps(doc, sort_keys=True).encode(), qos=1, retain=True
            )
        except AgentError as exc:  # link down: the next unverifiable message tries again
            log.debug("unverified_alarm_unsent", error=str(exc))
            with self._lock:
                self._last_alarm_s = None
            return
        with self._lock:
            self.alarms_published += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"total": self.total, "by_reason": dict(self.by_reason)}
