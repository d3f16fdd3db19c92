"""Following the devices' answers to one publication: terminal detection, counts, progress.

Only answers to *this* publication count: a state must name the manifest's digest
(``key``, the SHA-256 of the envelope) and must arrive live, after we subscribed. A state
the broker held retained from before is an earlier answer: kept for the report, never
counted. A targeted device that sends nothing within ``answer_s`` is ``no_answer``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn

from agent.errors import Reason
from agent.fleet.mqttclient import FleetClient
from agent.update.transfer.report import TERMINAL
from agent.update.transfer.wire import Topics

NO_ANSWER = Reason.NO_ANSWER.value


@dataclass(slots=True)
class DeviceState:
    status: str = "waiting"
    status_version: int = 0
    reason: str | None = None
    done: int = 0
    total: int = 0
    answered: bool = False  # a live state for this manifest arrived
    earlier: str | None = None  # a retained answer to the same manifest, from before
    detail: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL or self.status == NO_ANSWER

    @property
    def fraction(self) -> float:
        """Share of the work done: bytes while downloading, all of them from installing on."""
        if self.status in TERMINAL or self.status == "installing":
            return 1.0
        return self.done / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class StageOutcome:
    succeeded: tuple[str, ...]
    failed: tuple[str, ...]
    pending: tuple[str, ...]
    no_answer: tuple[str, ...] = ()

    def halts(self, halt_on_failures: int) -> bool:
        """The rollout stops at the failure limit, or when devices did not answer or finish."""
        return len(self.failed) >= halt_on_failures or bool(self.pending or self.no_answer)

    @property
    def all_successful(self) -> bool:
        return not (self.failed or self.pending or self.no_answer)


def outcome(states: dict[str, DeviceState], devices: Iterable[str]) -> StageOutcome:
    ok, bad, pending, silent = [], [], [], []
    for device in devices:
        state = states.get(device, DeviceState(status=NO_ANSWER))
        if state.status == "successful":
            ok.append(device)
        elif state.status == "failed":
            bad.append(device)
        elif state.status == NO_ANSWER:
            silent.append(device)
        else:
            pending.append(device)
    return StageOutcome(tuple(ok), tuple(bad), tuple(pending), tuple(silent))


def split_canary(devices: Iterable[str], canary: int) -> tuple[list[str], list[str]]:
    ordered = sorted(set(devices))
    return ordered[:canary], ordered[canary:]


@dataclass
class Tracker:
    """Op states of one deployment that answer the manifest with digest ``key``."""

    topics: Topics
    deployment_id: str
    key: str
    # Devices this publication targets; None: whoever answers (a fleet-wide manifest).
    expected: list[str] | None = None
    states: dict[str, DeviceState] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Event = field(default_factory=threading.Event)

    def attach(self, client: FleetClient) -> None:
        client.subscribe_flagged(
            self.topics.model_update_filter(self.deployment_id), self.on_message
        )

    def on_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        device = self.topics.device_of(topic)
        if device is None or not payload:
            return
        try:
            doc: dict[str, Any] = json.loads(payload)
            version = int(doc["status_version"])
        except (ValueError, KeyError, TypeError):
            return
        if doc.get("key") != self.key:
            return  # an answer to another manifest under the same deployment id
        targeted = self.expected is None or device in self.expected
        if not targeted:
            return  # devices outside the target list rightly refuse it (not_targeted)
        with self.lock:
            state = self.states.setdefault(device, DeviceState())
            if retained:
                if not state.answered:
                    state.earlier = str(doc.get("status"))
                return
            if state.answered and version <= state.status_version:
                return  # an older or replayed state
            state.answered = True
            state.status = str(doc.get("status"))
            state.status_version = version
            state.reason = doc.get("reason")
            state.detail = doc.get("detail")
            progress = doc.get("progress") or {}
            state.done = int(progress.get("bytes_done", state.done))
            state.total = int(progress.get("bytes_total", state.total))
        self.changed.set()

    def snapshot(self) -> dict[str, DeviceState]:
        with self.lock:
            return {
                k: DeviceState(
                    v.status,
                    v.status_version,
                    v.reason,
                    v.done,
                    v.total,
                    v.answered,
                    v.earlier,
                    v.detail,
                )
                for k, v in self.states.items()
            }

    def answers(self) -> dict[str, DeviceState]:
        """Targeted devices (or every device that answered) and where each one stands."""
        snap = self.snapshot()
        names = self.expected if self.expected is not None else list(snap)
        return {d: snap.get(d, DeviceState()) for d in names}

    def wait(
        self,
        timeout_s: float,
        answer_s: float,
        settle_s: float = 3.0,
        on_change: Callable[[dict[str, DeviceState]], None] | None = None,
    ) -> dict[str, DeviceState]:
        """Until every device is terminal or ``no_answer``, or ``timeout_s`` passes."""
        started = time.monotonic()
        deadline = started + timeout_s
        quiet_since = started
        while True:
            now = time.monotonic()
            snap = self._settle_silent(answer_time_over=now - started >= answer_s)
            if on_change is not None:
                on_change(snap)
            settled = self.expected is not None or now - quiet_since >= settle_s
            if snap and settled and all(s.terminal for s in snap.values()):
                return snap
            if not snap and now - started >= answer_s:
                return snap  # nobody targeted, and nobody answered
            if now >= deadline:
                return self._settle_silent(answer_time_over=True)
            if self.changed.wait(0.2):
                self.changed.clear()
                quiet_since = time.monotonic()

    def _settle_silent(self, *, answer_time_over: bool) -> dict[str, DeviceState]:
        snap = self.answers()
        if answer_time_over:
            for state in snap.values():
                if not state.answered:
                    state.status = NO_ANSWER
        return snap


class Bars:
    """Progress on a TTY: one bar for the stage (devices done) and one per device (bytes)."""

    def __init__(self, enabled: bool, title: str = "devices") -> None:
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._title = title
        if enabled:
            self._progress = Progress(
                TextColumn("{task.fields[device]:<20}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%  {task.fields[status]}"),
            )
            self._progress.start()

    @classmethod
    def for_stdout(cls, title: str = "devices") -> Bars:
        return cls(sys.stdout.isatty(), title)

    def update(self, states: dict[str, DeviceState]) -> None:
        if self._progress is None:
            return
        total = max(1, len(states))
        finished = sum(1 for s in states.values() if s.terminal)
        self._set(f"[{self._title}]", finished / total, f"{finished}/{len(states)} done")
        for device, state in sorted(states.items()):
            label = state.status + (f" ({state.reason})" if state.reason else "")
            self._set(device, state.fraction, label)

    def _set(self, name: str, fraction: float, label: str) -> None:
        assert self._progress is not None
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task("", total=1, device=name, status=label)
        self._progress.update(self._tasks[name], completed=fraction, status=label)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
