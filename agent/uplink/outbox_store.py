"""The durable half of the outbox: SQLite in WAL mode with a byte budget and priority eviction.

Rules applied on every insert, in one transaction per batch:
- a retained message supersedes undelivered rows on the same topic (only the latest matters);
- over budget, rows of lower priority are evicted oldest first; evicted detections are
  folded into per-label counts per minute rather than lost;
- a detection that still does not fit is folded into counts (``degraded``); stats that do
  not fit are rejected; alarms evict detections and then the oldest alarms.
Every drop is counted in the ``counters`` table, in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from agent.clock import Clock
from agent.config.uplink import OutboxConfig
from agent.errors import StorageError
from agent.log import get_logger
from agent.uplink.classes import MsgClass, OutMessage, StoredMessage, ttl_s
from agent.uplink.degrade import CountKey, CountRow, fold_payload, summaries

log = get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cls INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created_s REAL NOT NULL,
    expires_s REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_cls_id ON messages (cls, id);
CREATE TABLE IF NOT EXISTS counts (
    minute INTEGER NOT NULL, camera TEXT NOT NULL, model TEXT NOT NULL, label TEXT NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (minute, camera, model, label)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class OutboxStore:
    """Thread-safe (one connection behind a lock); used by the writer and the publisher."""

    def __init__(self, path: Path, cfg: OutboxConfig, clock: Clock, counts_topic: str) -> None:
        self.path = path
        self.cfg = cfg
        self.clock = clock
        self.counts_topic = counts_topic
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL fsyncs the WAL on every commit (power-loss safe); NORMAL only at checkpoints.
            sync = "NORMAL" if cfg.fsync == "off" else "FULL"
            self._db.execute(f"PRAGMA synchronous={sync}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"outbox database unusable: {exc}", path=str(path)) from exc
        self._bytes = int(row[0])
        self._pending: Counter[str] = Counter()

    # --- writes -----------------------------------------------------------------

    def insert_batch(self, messages: Iterable[OutMessage]) -> None:
        """Accept messages durably (per the fsync policy) in one transaction."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for msg in messages:
                    self._insert_one(msg)
                self._flush_counters()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(f"outbox write failed: {exc}", path=str(self.path)) from exc

    def _insert_one(self, msg: OutMessage, fold_if_full: bool = True) -> bool:
        self._pending[f"accepted.{msg.cls.label}"] += 1
        if msg.retain:
            self._supersede(msg.topic)
        if not self._make_room(msg.size, msg.cls):
            if msg.cls is MsgClass.DETECTION and fold_if_full:
                self._fold(fold_payload(msg.payload, self.clock.wall_s()))
                self._pending["degraded"] += 1
            else:
                self._pending[f"rejected.{msg.cls.label}"] += 1
            return False
        now = self.clock.wall_s()
        self._db.execute(
            "INSERT INTO messages (cls, topic, payload, qos, retain, created_s, expires_s, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                int(msg.cls),
                msg.topic,
                msg.payload,
                msg.qos,
                int(msg.retain),
                now,
                now + ttl_s(self.cfg, msg.cls),
                msg.size,
            ),
        )
        self._bytes += msg.size
        return True

    def _supersede(self, topic: str) -> None:
        rows = self._db.execute(
            "SELECT id, size FROM messages WHERE topic = ?", (topic,)
        ).fetchall()
        for row_id, size in rows:
            self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            self._bytes -= size
            self._pending["superseded"] += 1

    def _make_room(self, size: int, cls: MsgClass) -> bool:
        if size > self.cfg.max_bytes:
            return False
        # Victims: lower priority classes first (stats, then detections), oldest first;
        # an alarm may finally displace the oldest alarms.
        victims = [c for c in sorted(MsgClass, reverse=True) if c > cls]
        if cls is MsgClass.ALARM:
            victims.append(MsgClass.ALARM)
        for victim in victims:
            while self._bytes + size > self.cfg.max_bytes:
                rows = self._db.execute(
                    "SELECT id, size, payload, created_s FROM messages WHERE cls = ?"
                    " ORDER BY id LIMIT 64",
                    (int(victim),),
                ).fetchall()
                if not rows:
                    break
                for row_id, row_size, payload, created_s in rows:
                    if self._bytes + size <= self.cfg.max_bytes:
                        break
                    self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                    self._bytes -= row_size
                    if victim is MsgClass.DETECTION:
                        self._fold(fold_payload(payload, created_s))
                        self._pending["degraded"] += 1
                    else:
                        self._pending[f"evicted.{victim.label}"] += 1
        return self._bytes + size <= self.cfg.max_bytes

    def _fold(self, counts: Counter[CountKey]) -> None:
        for (minute, camera, model, label), n in counts.items():
            self._db.execute(
                "INSERT INTO counts (minute, camera, model, label, n) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (minute, camera, model, label) DO UPDATE SET n = n + excluded.n",
                (minute, camera, model, label, n),
            )

    def _flush_counters(self) -> None:
        for name, value in self._pending.items():
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (name, value),
            )
        self._pending.clear()

    def _rollback(self) -> None:
        self._pending.clear()
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()
        self._bytes = int(row[0])

    def maintain(self) -> None:
        """Expire rows past their TTL and turn closed minutes of counts into summary messages."""
        now = self.clock.wall_s()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                expired = self._db.execute(
                    "SELECT id, size, cls FROM messages WHERE expires_s <= ?", (now,)
                ).fetchall()
                for row_id, size, cls in expired:
                    self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                    self._bytes -= size
                    self._pending[f"expired.{MsgClass(cls).label}"] += 1
                self._emit_summaries(int(now // 60))
                self._flush_counters()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(
                    f"outbox maintenance failed: {exc}", path=str(self.path)
                ) from exc
        if expired:
            log.info("outbox_expired", count=len(expired))

    def _emit_summaries(self, current_minute: int) -> None:
        rows: list[CountRow] = self._db.execute(
            "SELECT minute, camera, model, label, n FROM counts WHERE minute < ?",
            (current_minute,),
        ).fetchall()
        for doc in summaries(rows):
            msg = OutMessage(
                self.counts_topic,
                json.dumps(doc, sort_keys=True).encode(),
                qos=1,
                retain=False,
                cls=MsgClass.DETECTION,
            )
            # Only stats may make room for a summary; otherwise it waits in the counts table.
            if not self._make_room(msg.size, MsgClass.DETECTION):
                continue
            self._insert_one(msg, fold_if_full=False)
            self._db.execute(
                "DELETE FROM counts WHERE minute = ? AND camera = ? AND model = ?",
                (doc["minute_ts"] // 60, doc["camera"], doc["model"]),
            )

    def delete(self, cls_by_id: dict[int, MsgClass], counter: str = "delivered") -> None:
        """Rows acknowledged (``delivered``) or refused (``refused``) by the broker."""
        ids = list(cls_by_id)
        if not ids:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for row_id in ids:
                    # No RETURNING: SQLite on older boards predates 3.35.
                    row = self._db.execute(
                        "SELECT size FROM messages WHERE id = ?", (row_id,)
                    ).fetchone()
                    if row is not None:
                        self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                        self._bytes -= int(row[0])
                        self._pending[f"{counter}.{cls_by_id[row_id].label}"] += 1
                self._flush_counters()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(f"outbox delete failed: {exc}", path=str(self.path)) from exc

    # --- reads ------------------------------------------------------------------

    def next_rows(
        self, *, above_id: int, up_to_id: int | None, exclude: set[int], limit: int
    ) -> list[StoredMessage]:
        """Undelivered rows by priority, then age, in the id range (above_id, up_to_id]."""
        sql = "SELECT id, topic, payload, qos, retain, cls, created_s FROM messages WHERE id > ?"
        params: list[object] = [above_id]
        if up_to_id is not None:
            sql += " AND id <= ?"
            params.append(up_to_id)
        sql += " ORDER BY cls, id LIMIT ?"
        params.append(limit + len(exclude))
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        out = [
            StoredMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), MsgClass(r[5]), r[6])
            for r in rows
            if r[0] not in exclude
        ]
        return out[:limit]

    def max_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
        return int(row[0])

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            depth_rows = self._db.execute(
                "SELECT cls, COUNT(*), COALESCE(SUM(size), 0) FROM messages GROUP BY cls"
            ).fetchall()
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            pending_counts = self._db.execute("SELECT COALESCE(SUM(n), 0) FROM counts").fetchone()
            total_bytes = self._bytes
        by_class = {MsgClass(c).label: {"depth": n, "bytes": b} for c, n, b in depth_rows}
        dropped: dict[str, dict[str, int]] = {}
        totals: dict[str, dict[str, int]] = {}
        for name, value in counters.items():
            kind, _, cls = name.partition(".")
            if kind in ("expired", "evicted", "rejected", "queue_full", "refused"):
                dropped.setdefault(kind, {})[cls] = int(value)
            elif cls:
                totals.setdefault(kind, {})[cls] = int(value)
        return {
            "depth": sum(n for _, n, _ in depth_rows),
            "bytes": total_bytes,
            "max_bytes": self.cfg.max_bytes,
            "by_class": by_class,
            "dropped": dropped,
            "degraded": int(counters.get("degraded", 0)),
            "superseded": int(counters.get("superseded", 0)),
            "pending_counts": int(pending_counts[0]),
            **totals,
        }

    def add_counter(self, name: str, value: int) -> None:
        """Counted outside a write (the in-memory queue overflowing)."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    (name, value),
                )
            except sqlite3.Error as exc:
                log.warning("outbox_counter_failed", name=name, error=str(exc))

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error as exc:
                log.warning("outbox_close_failed", error=str(exc))
