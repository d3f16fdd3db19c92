"""Operator commands: ``cmd/<op>/<cmd_id>`` → handler table → retained ``op/<op>/<cmd_id>`` states.

States: ``executing`` (status_version 1), then ``successful`` or ``failed`` with ``reason``
(status_version 2). States name the request by size and SHA-256 (``request``), never
echo its body. Commands are idempotent by cmd_id: the last state of recent ids is
persisted (bounded in count and bytes, ``cmdguard``), and a redelivered command
re-publishes that state instead of running again. A command found ``executing`` after a
restart is reported ``failed``/``interrupted``. A full queue or a sender over its rate
gets ``failed``/``busy`` (never silence). Nothing a payload contains can raise out of here.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentError, CommandError, Reason
from agent.fsutil import atomic_write_json
from agent.log import get_logger
from agent.uplink import cmdguard
from agent.uplink.topics import Topics, is_valid_name

log = get_logger(__name__)

FILE_NAME = "commands.json"
KEEP_IDS = 200
QUEUE_MAX = 64
TERMINAL = frozenset({"successful", "failed"})

Handler = Callable[[dict[str, Any]], dict[str, Any]]  # request fields → result fields
Emit = Callable[[str, dict[str, Any]], None]  # op-state topic, document (retained, QoS 1)


@dataclass
class CommandDispatcher:
    topics: Topics
    emit: Emit
    state_dir: Path
    handlers: dict[str, Handler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = self._load()
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=QUEUE_MAX)
        self.dropped = 0  # answered busy because the queue was full
        self.rate_limited = 0  # answered busy because the sender was over its rate
        self._buckets = cmdguard.TokenBuckets()
        self._thread: threading.Thread | None = None

    def register(self, op: str, handler: Handler) -> None:
        """Add or replace the handler of ``op`` (model updates register theirs later)."""
        self.handlers[op] = handler

    # --- persistence ----------------------------------------------------------------

    def _path(self) -> Path:
        return self.state_dir / FILE_NAME

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self._path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return (
            {k: v for k, v in doc.items() if isinstance(v, dict)} if isinstance(doc, dict) else {}
        )

    def _remember(self, key: str, state: dict[str, Any]) -> None:
        kept = cmdguard.compact(state)
        with self._lock:
            self._states.pop(key, None)
            self._states[key] = kept
            total = sum(cmdguard.state_bytes(s) for s in self._states.values())
            while len(self._states) > 1 and (
                len(self._states) > KEEP_IDS or total > cmdguard.HISTORY_MAX_BYTES
            ):
                total -= cmdguard.state_bytes(self._states.pop(next(iter(self._states))))
            snapshot = dict(self._states)
        try:
            atomic_write_json(self._path(), snapshot)
        except OSError as exc:
            # Disk full: the state is still published; only redelivery after a restart is lost.
            log.warning("command_state_persist_failed", key=key, error=str(exc))

    # --- entry points ---------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        """Link callback (paho's thread): queue and return; full queue → ``busy`` answer."""
        try:
            self._queue.put_nowait((topic, payload))
        except queue.Full:
            self.dropped += 1
            log.warning("command_queue_full", topic=topic, dropped=self.dropped)
            self._busy(topic, payload, "command queue full", retry_after_s=1.0)

    def _busy(self, topic: str, payload: bytes, detail: str, retry_after_s: float) -> None:
        """Answer ``failed``/``busy`` without running or remembering it: a resend may run."""
        parsed = self.topics.parse_cmd(topic)
        if parsed is None or not all(is_valid_name(p) for p in parsed):
            return
        op, cmd_id = parsed
        base = {"op": op, "cmd_id": cmd_id, "request": cmdguard.request_ref(payload)}
        state = self._state(
            base, "failed", Reason.BUSY, detail=detail, retry_after_s=_hundredths_up(retry_after_s)
        )
        self.emit(self.topics.op(op, cmd_id), state)

    def start(self, stop: threading.Event) -> None:
        def run() -> None:
            while not stop.is_set():
                try:
                    topic, payload = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                self.process(topic, payload)

        self._thread = threading.Thread(target=run, name="commands", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def process(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        """Handle one command synchronously; returns the final state (None: not a command)."""
        try:
            return self._process(topic, payload)
        except Exception as exc:
            log.exception("command_crashed", topic=topic, error=str(exc))
            return None

    def _process(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        parsed = self.topics.parse_cmd(topic)
        if parsed is None or not all(is_valid_name(p) for p in parsed):
            log.warning("command_bad_topic", topic=topic)
            return None
        op, cmd_id = parsed
        key = f"{op}/{cmd_id}"
        with self._lock:
            previous = self._states.get(key)
        if previous is not None:
            if previous.get("status") not in TERMINAL:
                previous = self._state(previous, "failed", reason=Reason.INTERRUPTED.value)
                self._remember(key, previous)
            log.info("command_redelivered", op=op, cmd_id=cmd_id, status=previous.get("status"))
            self.emit(self.topics.op(op, cmd_id), previous)
            return previous
        base: dict[str, Any] = {
            "op": op,
            "cmd_id": cmd_id,
            "request": cmdguard.request_ref(payload),
        }
        admitted = self._admit(key, op, cmd_id, payload, base)
        if not isinstance(admitted, tuple):
            return admitted  # refused: already answered
        handler, request = admitted
        executing = self._state(base, "executing")
        self._remember(key, executing)
        self.emit(self.topics.op(op, cmd_id), executing)
        log.info("command_started", op=op, cmd_id=cmd_id)
        try:
            result = handler(request)
        except CommandError as exc:
            final = self._state(executing, "failed", exc.reason, detail=exc.message, **exc.data)
        except AgentError as exc:
            final = self._state(executing, "failed", "error", detail=str(exc))
        except Exception as exc:
            log.exception("command_handler_crashed", op=op, cmd_id=cmd_id)
            final = self._state(executing, "failed", "internal_error", detail=str(exc))
        else:
            final = self._state(executing, "successful", result=result)
        return self._finish(key, op, cmd_id, final)

    def _admit(
        self, key: str, op: str, cmd_id: str, payload: bytes, base: dict[str, Any]
    ) -> tuple[Handler, dict[str, Any]] | dict[str, Any]:
        """The handler and request to run, or the refusal state (sent): size, shape, op, rate."""
        if len(payload) > cmdguard.MAX_REQUEST_BYTES:  # before parsing a byte of it
            detail = f"request is {len(payload)} bytes, limit {cmdguard.MAX_REQUEST_BYTES}"
            failed = self._state(base, "failed", Reason.TOO_LARGE, detail=detail)
            return self._finish(key, op, cmd_id, failed)
        request = decode_request(payload)
        if request is None:
            return self._finish(key, op, cmd_id, self._state(base, "failed", Reason.MALFORMED))
        handler = self.handlers.get(op)
        if handler is None:
            failed = self._state(base, "failed", Reason.UNKNOWN_OPERATION)
            return self._finish(key, op, cmd_id, failed)
        wait_s = self._buckets.take(cmdguard.sender_of(request, op), time.monotonic())
        if wait_s > 0:  # answered, not remembered: the same id may be sent again later
            self.rate_limited += 1
            log.warning("command_rate_limited", op=op, cmd_id=cmd_id, retry_after_s=wait_s)
            busy = self._state(
                base,
                "failed",
                Reason.BUSY,
                detail="sender over its command rate",
                retry_after_s=_hundredths_up(wait_s),
            )
            self.emit(self.topics.op(op, cmd_id), busy)
            return busy
        return handler, request

    def _finish(self, key: str, op: str, cmd_id: str, state: dict[str, Any]) -> dict[str, Any]:
        self._remember(key, state)
        self.emit(self.topics.op(op, cmd_id), state)
        log.info(
            "command_finished",
            op=op,
            cmd_id=cmd_id,
            status=state["status"],
            reason=state.get("reason"),
        )
        return state

    @staticmethod
    def _state(
        base: dict[str, Any], status: str, reason: Reason | str | None = None, **extra: Any
    ) -> dict[str, Any]:
        state = {
            **base,
            **extra,
            "status": status,
            "status_version": int(base.get("status_version", 0)) + 1,
        }
        state.pop("reason", None)
        if reason is not None:
            state["reason"] = str(reason)
        return state


def decode_request(payload: bytes) -> dict[str, Any] | None:
    """A request is a JSON object (an empty payload means ``{}``); anything else is malformed.

    Nesting deeper than ``cmdguard.MAX_DEPTH`` is malformed too (the parser's own recursion
    limit would otherwise surface as a crash).
    """
    if not payload.strip():
        return {}
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict) or cmdguard.nesting_depth(doc) > cmdguard.MAX_DEPTH:
        return None
    # Fields the device owns in op states cannot come from the operator.
    for owned in ("status", "status_version", "reason", "result"):
        doc.pop(owned, None)
    return doc


def require(request: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    """A request field of the given type, or CommandError(malformed)."""
    value = request.get(name, default)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise CommandError(Reason.MALFORMED, f"field {name!r} must be {kind.__name__}")
    return value


def _hundredths_up(seconds: float) -> float:
    # Rounded up, never to 0: a sender told to retry after 0 s would just flood again.
    return max(0.01, math.ceil(seconds * 100) / 100)
