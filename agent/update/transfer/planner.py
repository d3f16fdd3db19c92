"""Which chunks to request next: a sliding window over the missing chunks, with stall re-requests.

Pure: the caller passes ``now`` and reports arrivals; the planner answers with
indices to request, or with the reason the transfer must end. Mosquitto drops
messages silently past ``max_queued_messages`` / ``max_inflight_messages``, so
the window (chunks requested but not yet seen) stays far below those limits.

Re-requests back off while the shared stream is busy: a device that keeps seeing
frames (other devices' chunks, a backlog it has not read yet) is probably about to
get what it asked for, so a stalled chunk is re-armed with a jittered delay, at most
``max_deferrals`` times, before it is asked again. That keeps a slow device from
re-requesting what the stream already carried (the fleet cost of a rollout).

Answered requests: requests are numbered (``Plan.seq``), and a server that names the
requests each batch answered in its ack frame (``answered``) lets the planner tell a
lost chunk from one still queued ahead of it. A chunk whose request's answer has been
read and that did not come before it was lost: it is asked again ``answer_grace_s``
later, stream busy or not, without waiting for a stall. One whose answer has not been
read yet is in this device's backlog (a CPU-starved device lags the stream by seconds),
or its request was lost: while the stream is busy it is deferred up to
``max_deferrals_unanswered`` times instead of ``max_deferrals``, so a slow device stops
re-asking for what is already on its way to it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.update.transfer.bitmap import ChunkBitmap


class Verdict(str, enum.Enum):
    RUNNING = "running"
    COMPLETE = "complete"
    DEADLINE = "deadline"  # overall deadline passed -> slow_transfer


@dataclass(frozen=True, slots=True)
class PlannerLimits:
    window: int = 16
    stall_s: float = 5.0
    deadline_s: float = 3600.0
    # Ask again only once this many window slots are free (fewer, larger request messages).
    min_batch: int = 4
    # A frame seen this recently makes the stream "busy": stalls are deferred, not re-asked.
    busy_s: float = 1.0
    max_deferrals: int = 2
    # With a server that names answered requests (see the module docstring).
    answer_grace_s: float = 0.3
    max_deferrals_unanswered: int = 6

    def __post_init__(self) -> None:
        if self.window < 1 or self.stall_s <= 0 or self.deadline_s <= 0:
            raise ValueError("window >= 1, stall_s > 0 and deadline_s > 0 are required")


@dataclass(slots=True)
class Plan:
    verdict: Verdict
    request: list[int] = field(default_factory=list)
    stalled: bool = False
    seq: int = 0  # the request's number (acks name it once a server has answered it)
    again: list[int] = field(default_factory=list)  # of ``request``: asked for before


@dataclass(slots=True)
class WindowPlanner:
    """At most ``limits.window`` chunks in flight; those unseen for ``stall_s`` are asked again."""

    bitmap: ChunkBitmap
    limits: PlannerLimits
    started_s: float
    in_flight: dict[int, float] = field(default_factory=dict)
    last_progress_s: float = 0.0
    received_this_run: int = 0
    empty_stalls: int = 0
    stalls: int = 0
    requested_total: int = 0
    deferred: int = 0
    last_frame_s: float = -1e18
    _deferrals: dict[int, int] = field(default_factory=dict)
    next_seq: int = 0
    asked_seq: dict[int, int] = field(default_factory=dict)  # in flight -> its latest request
    answered_s: dict[int, float] = field(default_factory=dict)  # -> when its answer was read
    attributing: bool = False  # the server names answered requests in its acks
    lost: int = 0  # chunks asked again because their answer came without them
    asked_ever: set[int] = field(default_factory=set)
    # Uniform [0, 1): the jitter source (injectable so tests are deterministic).
    jitter: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        self.last_progress_s = self.started_s

    def arrived(self, index: int, now_s: float, fresh: bool) -> None:
        """A verified chunk arrived (``fresh``: it was missing before)."""
        self._forget(index)
        self.received_this_run += 1
        self.last_frame_s = now_s
        if fresh:
            self.last_progress_s = now_s

    @property
    def wants_plan(self) -> bool:
        """Enough window slots are free for a request (or nothing is in flight)."""
        room = self.limits.window - len(self.in_flight)
        return not self.in_flight or room >= min(self.limits.min_batch, self.limits.window)

    def answered(self, seq: int, now_s: float) -> None:
        """An ack named request ``seq``: what it (or an earlier request) asked for and is
        still missing did not come before that ack. Requests reach the server in order, so
        an answered later request also means an unanswered earlier one was lost."""
        self.attributing = True
        for index, asked in self.asked_seq.items():
            if asked <= seq and index not in self.answered_s:
                self.answered_s[index] = now_s

    def _forget(self, index: int) -> None:
        self.in_flight.pop(index, None)
        self._deferrals.pop(index, None)
        self.asked_seq.pop(index, None)
        self.answered_s.pop(index, None)

    def next_due_s(self) -> float:
        """When ``plan`` may next ask for something though no frame arrives.

        The earliest stall (or deferred stall) expiry, else the deadline. Arrivals that free
        window slots wake the driver themselves (``wants_plan``), so between them it need
        not tick at all.
        """
        due = self.started_s + self.limits.deadline_s
        if self.in_flight:
            due = min(due, min(self.in_flight.values()) + self.limits.stall_s)
        if self.answered_s:
            due = min(due, min(self.answered_s.values()) + self.limits.answer_grace_s)
        return due

    def saw_frame(self, now_s: float) -> None:
        """Any frame on the stream (duplicates, acks, chunks for others): the stream is busy."""
        self.last_frame_s = now_s

    def plan(self, now_s: float) -> Plan:
        if self.bitmap.complete:
            self.in_flight.clear()
            return Plan(Verdict.COMPLETE)
        if now_s - self.started_s > self.limits.deadline_s:
            return Plan(Verdict.DEADLINE)
        stalled = False
        # Answered without arriving: lost on the way (asked again after a short grace).
        grace = self.limits.answer_grace_s
        lost = [i for i, t in self.answered_s.items() if now_s - t >= grace]
        # Anything requested long ago and still missing is presumed lost (dropped by a queue
        # limit, a broker restart, or a message size limit): forget it so it is asked again.
        expired = [
            i
            for i, t in self.in_flight.items()
            if now_s - t >= self.limits.stall_s and i not in self.answered_s
        ]
        if expired and now_s - self.last_frame_s < self.limits.busy_s:
            expired = self._defer(expired, now_s)
        self.lost += len(lost)
        expired += lost
        if expired:
            stalled = True
            self.stalls += 1
            for index in expired:
                self._forget(index)
            if self.received_this_run == 0:
                self.empty_stalls += 1
        for index in list(self.in_flight):
            if index in self.bitmap:  # arrived through another device's request
                self._forget(index)
        room = self.limits.window - len(self.in_flight)
        if room <= 0 or (self.in_flight and room < min(self.limits.min_batch, self.limits.window)):
            return Plan(Verdict.RUNNING, stalled=stalled)
        request: list[int] = []
        seq = self.next_seq
        for index in self.bitmap.missing(limit=room + len(self.in_flight)):
            if index not in self.in_flight:
                request.append(index)
                self.in_flight[index] = now_s
                self.asked_seq[index] = seq
                if len(request) >= room:
                    break
        again = [i for i in request if i in self.asked_ever]
        self.asked_ever.update(request)
        if request:
            self.next_seq += 1
        self.requested_total += len(request)
        return Plan(Verdict.RUNNING, request=request, stalled=stalled, seq=seq, again=again)

    def _defer(self, expired: list[int], now_s: float) -> list[int]:
        """Re-arm stalled chunks with a jittered delay while the stream is busy; the rest expire."""
        still: list[int] = []
        # A server that answers by name: an unanswered request is still on its way here.
        most = (
            self.limits.max_deferrals_unanswered if self.attributing else self.limits.max_deferrals
        )
        for index in expired:
            count = self._deferrals.get(index, 0)
            if count >= most:
                still.append(index)
                continue
            self._deferrals[index] = count + 1
            self.deferred += 1
            # Due again after 0.5-1.5 stall periods, so devices do not re-ask in lockstep.
            self.in_flight[index] = now_s + self.limits.stall_s * (self.jitter() - 0.5)
        return still
