"""Drain the outbox onto the link: live traffic first, the backlog at a capped rate.

On each new connection (``Link.generation`` changes) every row not yet acknowledged
is due again; rows up to the highest id at that moment are the *backlog*, later rows
are *live*. Live rows go out as fast as the in-flight window allows; backlog rows at
most ``drain_rate_per_s``. Within each of the two streams rows go by class priority,
then in acceptance order. A row is deleted only when the broker acknowledged it
(PUBACK for QoS 1, written to the socket for QoS 0): delivery is at least once.

When the delete itself fails (a full disk: SQLite cannot write its journal), the rows
are remembered as settled, never sent again by this process, and the delete is retried
each tick; only a restart before space returns re-sends them.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from agent.errors import StorageError, TransportError
from agent.log import get_logger
from agent.uplink.classes import MsgClass, StoredMessage
from agent.uplink.link import Link
from agent.uplink.outbox import Outbox

log = get_logger(__name__)

MAX_INFLIGHT = 64
TICK_S = 0.05
MAX_UNDELETED = 100_000  # settled rows remembered while deletes fail; beyond: re-sent later


@dataclass(slots=True)
class TokenBucket:
    """Capped rate: ``take`` succeeds at most ``rate_per_s`` times a second on average."""

    rate_per_s: float
    burst: float
    tokens: float = 0.0
    last_s: float | None = None

    def refill(self, now_s: float) -> None:
        if self.last_s is not None:
            self.tokens = min(self.burst, self.tokens + (now_s - self.last_s) * self.rate_per_s)
        self.last_s = now_s

    def take(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class _Session:
    generation: int
    backlog_up_to: int
    inflight: dict[int, tuple[int, MsgClass]] = field(default_factory=dict)  # mid → row, cls


class Publisher:
    def __init__(self, outbox: Outbox, link: Link) -> None:
        self.outbox = outbox
        self.link = link
        # Its own event, not the daemon's stop: at shutdown it keeps draining for a grace
        # period while the link is still up (the link stops after it).
        self._closing = threading.Event()
        self._grace_until = 0.0
        self._acks: queue.SimpleQueue[tuple[int, int, bool]] = queue.SimpleQueue()
        link.add_ack_listener(lambda gen, mid, ok: self._acks.put((gen, mid, ok)))
        rate = outbox.cfg.drain_rate_per_s
        self.bucket = TokenBucket(rate_per_s=rate, burst=max(1.0, rate / 2))
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        # Settled (acknowledged or refused) but not yet deleted: row id → class, counter.
        self._undeleted: dict[int, tuple[MsgClass, str]] = {}
        self._delete_failing = False
        self.sent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uplink-publisher", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = 2.0) -> None:
        """Keep sending for up to ``grace_s`` while connected and rows are pending, then stop."""
        self._grace_until = self.outbox.store.clock.monotonic_s() + grace_s
        self._closing.set()
        if self._thread is not None:
            self._thread.join(grace_s + 2.0)

    def _done_closing(self) -> bool:
        if not self._closing.is_set():
            return False
        if not self.link.connected or self.outbox.store.clock.monotonic_s() >= self._grace_until:
            return True
        session = self._session
        pending = self.outbox.store.next_rows(
            above_id=0, up_to_id=None, exclude=set(self._undeleted), limit=1
        )
        return not pending and (session is None or not session.inflight)

    def _run(self) -> None:
        while True:
            stopping = self._done_closing()
            try:
                self._tick()
            except (StorageError, TransportError) as exc:
                log.warning("publisher_tick_failed", error=str(exc))
            except Exception:
                log.exception("publisher_tick_crashed")
            if stopping:
                # One last pass after stop so acknowledged rows are deleted.
                self._settle_acks()
                return
            self.outbox.new_data.wait(TICK_S)
            self.outbox.new_data.clear()

    def _tick(self) -> None:
        self._settle_acks()
        if not self.link.connected:
            return
        gen = self.link.generation
        if self._session is None or self._session.generation != gen:
            self._session = _Session(gen, self.outbox.store.max_id())
            log.info("publisher_session", generation=gen, backlog_up_to=self._session.backlog_up_to)
        session = self._session
        self.bucket.refill(self.outbox.store.clock.monotonic_s())
        busy = {row for row, _ in session.inflight.values()}
        busy.update(self._undeleted)
        room = MAX_INFLIGHT - len(session.inflight)
        if room <= 0:
            return
        live = self.outbox.store.next_rows(
            above_id=session.backlog_up_to, up_to_id=None, exclude=busy, limit=room
        )
        sent = self._send(session, live, limit=room)
        room -= sent
        if room <= 0:
            return
        backlog = self.outbox.store.next_rows(
            above_id=0, up_to_id=session.backlog_up_to, exclude=busy, limit=room
        )
        for row in backlog:
            if not self.bucket.take():
                break
            if self._send(session, [row], limit=1) == 0:
                break

    def _send(self, session: _Session, rows: list[StoredMessage], limit: int) -> int:
        count = 0
        for row in rows[:limit]:
            delivery = self.link.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            session.inflight[delivery.mid] = (row.row_id, row.cls)
            count += 1
            self.sent += 1
        return count

    def _settle_acks(self) -> None:
        done: dict[int, MsgClass] = {}
        refused: dict[int, MsgClass] = {}
        session = self._session
        while True:
            try:
                gen, mid, ok = self._acks.get_nowait()
            except queue.Empty:
                break
            if session is None or gen != session.generation:
                continue  # an ack from an earlier connection: its rows are resent anyway
            entry = session.inflight.pop(mid, None)
            if entry is not None:
                (done if ok else refused)[entry[0]] = entry[1]
        for row_id, cls in done.items():
            self._undeleted[row_id] = (cls, "delivered")
        if refused:
            # The broker said no (e.g. not authorised): resending would loop forever.
            log.warning("publish_refused_by_broker", count=len(refused))
            for row_id, cls in refused.items():
                self._undeleted[row_id] = (cls, "refused")
        self._delete_settled()

    def _delete_settled(self) -> None:
        if not self._undeleted:
            return
        by_counter: dict[str, dict[int, MsgClass]] = {}
        for row_id, (cls, counter) in self._undeleted.items():
            by_counter.setdefault(counter, {})[row_id] = cls
        try:
            for counter, rows in by_counter.items():
                self.outbox.store.delete(rows, counter=counter)
                for row_id in rows:
                    del self._undeleted[row_id]
        except StorageError as exc:  # sending goes on; the delete is retried next tick
            if not self._delete_failing:
                log.warning("outbox_delete_failed", rows=len(self._undeleted), error=str(exc))
            self._delete_failing = True
            while len(self._undeleted) > MAX_UNDELETED:  # oldest first: re-sent after restart
                del self._undeleted[next(iter(self._undeleted))]
        else:
            if self._delete_failing:
                log.info("outbox_delete_recovered")
            self._delete_failing = False
