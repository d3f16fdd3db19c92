"""Following model-update op states of many devices: terminal detection, counts, progress bars."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn

from agent.fleet.mqttclient import FleetClient
from agent.update.transfer.report import TERMINAL
from agent.update.transfer.wire import Topics


@dataclass(slots=True)
class DeviceState:
    status: str = "waiting"
    status_version: int = 0
    reason: str | None = None
    done: int = 0
    total: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class StageOutcome:
    succeeded: tuple[str, ...]
    failed: tuple[str, ...]
    pending: tuple[str, ...]

    def halts(self, halt_on_failures: int) -> bool:
        """The rollout stops once failures reach the limit, or when devices never finished."""
        return len(self.failed) >= halt_on_failures or bool(self.pending)


def outcome(states: dict[str, DeviceState], devices: Iterable[str]) -> StageOutcome:
    ok, bad, pending = [], [], []
    for device in devices:
        state = states.get(device, DeviceState())
        if state.status == "successful":
            ok.append(device)
        elif state.status == "failed":
            bad.append(device)
        else:
            pending.append(device)
    return StageOutcome(tuple(ok), tuple(bad), tuple(pending))


def split_canary(devices: Iterable[str], canary: int) -> tuple[list[str], list[str]]:
    ordered = sorted(set(devices))
    return ordered[:canary], ordered[canary:]


@dataclass
class Tracker:
    """Op states of one deployment; ``status_version`` orders them and drops replays."""

    topics: Topics
    deployment_id: str
    states: dict[str, DeviceState] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Event = field(default_factory=threading.Event)

    def attach(self, client: FleetClient) -> None:
        client.subscribe(self.topics.model_update_filter(self.deployment_id), self.on_message)

    def on_message(self, topic: str, payload: bytes) -> None:
        device = self.topics.device_of(topic)
        if device is None or not payload:
            return
        try:
            doc: dict[str, Any] = json.loads(payload)
            version = int(doc["status_version"])
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            state = self.states.setdefault(device, DeviceState())
            if version <= state.status_version:
                return  # an older or replayed state
            state.status = str(doc.get("status"))
            state.status_version = version
            state.reason = doc.get("reason")
            progress = doc.get("progress") or {}
            state.done = int(progress.get("bytes_done", state.done))
            state.total = int(progress.get("bytes_total", state.total))
        self.changed.set()

    def snapshot(self) -> dict[str, DeviceState]:
        with self.lock:
            return {
                k: DeviceState(v.status, v.status_version, v.reason, v.done, v.total)
                for k, v in self.states.items()
            }

    def wait(
        self, devices: list[str] | None, timeout_s: float, settle_s: float = 3.0
    ) -> dict[str, DeviceState]:
        """Until every device (or, with no list, every device seen) is terminal, or timeout."""
        bars = _Bars(sys.stdout.isatty())
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        try:
            while time.monotonic() < deadline:
                if self.changed.wait(0.2):
                    self.changed.clear()
                    quiet_since = time.monotonic()
                snap = self.snapshot()
                bars.update(snap)
                names = devices if devices is not None else list(snap)
                settled = devices is not None or time.monotonic() - quiet_since >= settle_s
                if names and settled and all(snap.get(d, DeviceState()).terminal for d in names):
                    return snap
        finally:
            bars.close()
        return self.snapshot()


class _Bars:
    """One rich progress bar per device, only on a TTY (scripts get the final summary only)."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        if enabled:
            self._progress = Progress(
                TextColumn("{task.fields[device]:<20}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%  {task.fields[status]}"),
            )
            self._progress.start()

    def update(self, states: dict[str, DeviceState]) -> None:
        if self._progress is None:
            return
        for device, state in sorted(states.items()):
            if device not in self._tasks:
                self._tasks[device] = self._progress.add_task(
                    "", total=1, device=device, status=state.status
                )
            done = 1.0 if state.status == "successful" else state.done / max(1, state.total)
            label = state.status + (f" ({state.reason})" if state.reason else "")
            self._progress.update(self._tasks[device], completed=done, status=label)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
