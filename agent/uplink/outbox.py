"""Store-and-forward outbox: a bounded in-memory queue in front of the SQLite store.

Producers (camera and inference threads) call ``put``, which never blocks: when the
queue is full the message is counted as ``queue_full`` and dropped. A writer thread
batches queued messages into SQLite. Commit policy (``outbox.fsync``):
- ``always``: one transaction per message, WAL fsynced on every commit;
- ``batch``: commits at most every ``batch_interval_s``, WAL fsynced on every commit;
- ``off``: as ``batch`` but fsync only at WAL checkpoints (survives a crash of the agent,
  not a power loss).
A message is *accepted* once its transaction has committed; ``flush`` waits for that.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from agent.clock import Clock, SystemClock
from agent.config.uplink import OutboxConfig
from agent.errors import StorageError
from agent.events.types import DetectionEvent, EventSink
from agent.log import get_logger
from agent.uplink.classes import MsgClass, OutMessage
from agent.uplink.outbox_store import OutboxStore

log = get_logger(__name__)

DB_NAME = "outbox.db"
QUEUE_MAX = 10_000
MAX_BATCH = 512
STORAGE_RETRY_S = 1.0  # pause before retrying a batch the store refused (disk full)


class Outbox:
    def __init__(
        self,
        state_dir: Path,
        cfg: OutboxConfig,
        counts_topic: str,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = OutboxStore(state_dir / DB_NAME, cfg, clock or SystemClock(), counts_topic)
        # Not the daemon's shared stop: the writer must keep draining while later stages
        # (the pipeline) flush their last events during shutdown. ``stop()`` sets it.
        self._closing = threading.Event()
        self._queue: queue.Queue[OutMessage] = queue.Queue(maxsize=QUEUE_MAX)
        self._cond = threading.Condition()
        self._enqueued = 0
        self._settled = 0  # committed or dropped
        self._overflow: Counter[str] = Counter()
        self.new_data = threading.Event()
        self.storage_failing = False  # the last commit failed (e.g. ENOSPC); retried
        self._thread: threading.Thread | None = None

    # --- producers ------------------------------------------------------------------

    def put(self, msg: OutMessage) -> bool:
        """Queue without blocking; False (and counted) when the queue is full."""
        with self._cond:
            try:
                self._queue.put_nowait(msg)
            except queue.Full:
                self._overflow[msg.cls.label] += 1
                return False
            self._enqueued += 1
        return True

    def put_json(
        self, topic: str, doc: Any, cls: MsgClass, qos: int = 1, retain: bool = False
    ) -> bool:
        payload = json.dumps(doc, sort_keys=True, default=str).encode("utf-8")
        return self.put(OutMessage(topic, payload, qos, retain, cls))

    def sink(self, topic: str) -> EventSink:
        """An EventSink for the pipeline: detection events to ``topic`` at QoS 1."""

        def _sink(event: DetectionEvent) -> None:
            self.put_json(topic, event.to_payload(), MsgClass.DETECTION)

        return _sink

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued before this call is committed (or dropped)."""
        with self._cond:
            target = self._enqueued
            return self._cond.wait_for(lambda: self._settled >= target, timeout_s)

    # --- writer thread --------------------------------------------------------------

    def start(self) -> None:
        self.store.maintain()
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = 0.0 if self.cfg.fsync == "always" else self.cfg.batch_interval_s
        last_maintain = 0.0
        held: list[OutMessage] = []  # a batch the store refused (disk full): retried, not lost
        while True:
            batch = held or self._collect(interval)
            held = []
            if batch and not self._commit(batch):
                if self._closing.is_set():
                    self._give_up(batch)
                else:
                    held = batch
                    self._closing.wait(STORAGE_RETRY_S)
            now = self.store.clock.monotonic_s()
            if now - last_maintain >= max(interval, 1.0):
                last_maintain = now
                self._maintain()
            if self._closing.is_set() and self._queue.empty() and not held:
                return

    def _collect(self, interval_s: float) -> list[OutMessage]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        if self.cfg.fsync == "always":
            return batch
        # Gather what arrives within the interval so one fsync covers many messages.
        deadline = self.store.clock.monotonic_s() + interval_s
        while len(batch) < MAX_BATCH:
            left = deadline - self.store.clock.monotonic_s()
            try:
                batch.append(
                    self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if self._closing.is_set() and left <= 0:
                break
        return batch

    def _commit(self, batch: list[OutMessage]) -> bool:
        """True once committed; False when the store failed (the caller holds the batch)."""
        try:
            self.store.insert_batch(batch)
        except StorageError as exc:
            if not self.storage_failing:
                log.error("outbox_commit_failed", count=len(batch), error=str(exc))  # noqa: TRY400 - disk full is expected here; no traceback
            self.storage_failing = True
            return False
        if self.storage_failing:
            log.info("outbox_commit_recovered", count=len(batch))
        self.storage_failing = False
        self._settle(len(batch))
        self.new_data.set()
        return True

    def _give_up(self, batch: list[OutMessage]) -> None:
        # Only at shutdown with the store still failing: counted, never silent.
        self._overflow["storage_error"] += len(batch)
        log.error("outbox_batch_lost_at_stop", count=len(batch))
        self._settle(len(batch))

    def _settle(self, count: int) -> None:
        with self._cond:
            self._settled += count
            self._cond.notify_all()

    def _maintain(self) -> None:
        with self._cond:
            overflow = dict(self._overflow)
            self._overflow.clear()
        for cls, n in overflow.items():
            self.store.add_counter(f"queue_full.{cls}", n)
        try:
            self.store.maintain()
        except StorageError as exc:
            log.exception("outbox_maintenance_failed", error=str(exc))
        if overflow:
            log.warning("outbox_queue_overflow", dropped=overflow)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("outbox_writer_stuck", timeout_s=timeout_s)
                return
        self._maintain()
        self.store.close()

    def snapshot(self) -> dict[str, Any]:
        snap = self.store.snapshot()
        with self._cond:
            snap["queued"] = self._queue.qsize()
            live_overflow = dict(self._overflow)
        dropped = snap["dropped"]
        assert isinstance(dropped, dict)
        for cls, n in live_overflow.items():
            per = dropped.setdefault("queue_full", {})
            per[cls] = per.get(cls, 0) + n
        return snap
