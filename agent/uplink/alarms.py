"""Alarms: retained on ``a/<name>`` while active, cleared by an empty retained message.

The set of active alarms is persisted, so an alarm raised before a restart is cleared
after it when its condition is gone, instead of staying retained on the broker forever.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.fsutil import atomic_write_json
from agent.log import get_logger
from agent.uplink.topics import Topics, is_valid_name

log = get_logger(__name__)

FILE_NAME = "alarms.json"
SEVERITIES = ("critical", "major", "minor", "warning")
# topic, payload (b"" clears), retained QoS 1 in the alarm class
Emit = Callable[[str, bytes], None]


class Alarms:
    def __init__(
        self, topics: Topics, emit: Emit, state_dir: Path, now: Callable[[], float]
    ) -> None:
        self.topics = topics
        self.emit = emit
        self.path = state_dir / FILE_NAME
        self.now = now
        self._lock = threading.Lock()
        self.active: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return (
            {k: v for k, v in doc.items() if isinstance(v, dict)} if isinstance(doc, dict) else {}
        )

    def raise_(self, name: str, severity: str, text: str, **extra: Any) -> bool:
        """Activate (or update the text of) an alarm; True when something was published."""
        if not is_valid_name(name) or severity not in SEVERITIES:
            raise ValueError(f"bad alarm {name!r} / severity {severity!r}")
        with self._lock:
            current = self.active.get(name)
            if current and current["severity"] == severity and current["text"] == text:
                return False
            since = current["since"] if current else round(self.now(), 3)
            doc = {"severity": severity, "text": text, "since": since, **extra}
            self.active[name] = doc
            self._persist()
        self.emit(self.topics.alarm(name), json.dumps(doc, sort_keys=True).encode())
        log.warning("alarm_raised", alarm=name, severity=severity, text=text)
        return True

    def clear(self, name: str) -> bool:
        with self._lock:
            if self.active.pop(name, None) is None:
                return False
            self._persist()
        self.emit(self.topics.alarm(name), b"")
        log.info("alarm_cleared", alarm=name)
        return True

    def _persist(self) -> None:
        # A full disk must not stop alarms (a disk alarm above all): keep the set in memory
        # and publish anyway; the next change retries the write.
        try:
            atomic_write_json(self.path, self.active)
        except OSError as exc:
            log.warning("alarms_persist_failed", path=str(self.path), error=str(exc))

    def reconcile(self, wanted: dict[str, tuple[str, str]]) -> None:
        """Make the active set equal ``wanted`` (name → (severity, text))."""
        for name, (severity, text) in wanted.items():
            self.raise_(name, severity, text)
        for name in list(self.active):
            if name not in wanted:
                self.clear(name)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self.active.items()}
