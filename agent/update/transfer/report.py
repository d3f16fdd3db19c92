"""Op states of model updates on ``<root>/d/<dev>/op/model_update/<deployment_id>``.

Retained, QoS 1, with a ``status_version`` per deployment that survives restarts
(persisted) so the fleet can order states and ignore replays of older ones. Every
state carries ``key`` (the SHA-256 of the manifest envelope it answers: the fleet
judges only answers to the manifest it published) and ``ts`` (wall time: the latest
op across deployments, whose ``status_version``s are independent).
A state that could not be published (link down) is kept and sent on the next flush.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agent.errors import AgentError, Reason
from agent.fsutil import atomic_write_json
from agent.log import get_logger
from agent.update.transfer.wire import Topics
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import parse_manifest
from agent.update.trust.verify import MAX_ENVELOPE_BYTES

log = get_logger(__name__)

TERMINAL = frozenset({"successful", "failed"})
_MAX_REMEMBERED = 64
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def report_id(envelope_bytes: bytes) -> str:
    """The deployment id to report a rejection under (unverified: used only as a topic name)."""
    try:
        manifest = parse_manifest(parse_envelope(envelope_bytes, MAX_ENVELOPE_BYTES).payload)
    except AgentError:
        manifest = None
    if manifest is not None and _ID_RE.match(manifest.deployment_id):
        return manifest.deployment_id
    return "rejected-" + hashlib.sha256(envelope_bytes).hexdigest()[:16]


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object: ...


class OpReporter:
    def __init__(
        self,
        bus: Publisher,
        topics: Topics,
        device: str,
        state_path: Path,
        wall_s: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._wall_s = wall_s
        self._topics = topics
        self._device = device
        self._path = state_path
        self._lock = threading.Lock()
        self._unsent: dict[str, bytes] = {}
        self._persist_pending = False
        try:
            raw = json.loads(state_path.read_text(encoding="utf-8"))
            self._known: dict[str, dict[str, Any]] = {str(k): dict(v) for k, v in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            self._known = {}

    def last(self, deployment_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._known.get(deployment_id)

    def report(
        self, deployment_id: str, status: str, reason: Reason | None = None, **fields: Any
    ) -> dict[str, Any]:
        key = fields.get("key")
        with self._lock:
            previous = self._known.get(deployment_id, {})
            if (
                status in TERMINAL
                and key is not None
                and previous.get("key") == key
                and previous.get("status") == status
                and previous.get("reason") == (reason.value if reason is not None else None)
            ):
                # The same retained manifest redelivered (reconnect, restart): already reported.
                return dict(previous)
            version = int(previous.get("status_version", 0)) + 1
            doc: dict[str, Any] = {
                "status": status,
                "status_version": version,
                "reason": reason.value if reason is not None else None,
                "deployment_id": deployment_id,
                "ts": round(self._wall_s(), 3),
                **fields,
            }
            changed = (previous.get("status"), previous.get("reason")) != (status, doc["reason"])
            self._known[deployment_id] = {
                "status_version": version,
                "status": status,
                "reason": doc["reason"],
                "key": key,
            }
            while len(self._known) > _MAX_REMEMBERED:
                self._known.pop(next(iter(self._known)))
            self._persist()
            self._unsent[deployment_id] = json.dumps(doc, sort_keys=True).encode("utf-8")
        # Progress reports repeat the status: logged once per change, not once a second.
        (log.info if changed else log.debug)(
            "model_update_state", deployment=deployment_id, status=status, reason=reason
        )
        self.flush()
        return doc

    def _persist(self) -> None:
        """Caller holds the lock. A full disk must not swallow the state: it is published
        anyway and the file is written again on the next flush (issue 18: ENOSPC)."""
        try:
            atomic_write_json(self._path, self._known, mode=0o600)
        except OSError as exc:
            self._persist_pending = True
            log.warning("model_update_states_unsaved", error=str(exc))
        else:
            self._persist_pending = False

    def flush(self) -> None:
        with self._lock:
            if self._persist_pending:
                self._persist()
            items = list(self._unsent.items())
        for deployment_id, payload in items:
            try:
                topic = self._topics.model_update(self._device, deployment_id)
                self._bus.publish(topic, payload, qos=1, retain=True)
            except AgentError as exc:
                log.debug("model_update_state_unsent", deployment=deployment_id, error=str(exc))
                return
            with self._lock:
                if self._unsent.get(deployment_id) is payload:
                    del self._unsent[deployment_id]
