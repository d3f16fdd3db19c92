"""Chunk server: answers device chunk requests on one shared stream topic per deployment.

Requests from every device are pooled for ``coalesce_s``; each wanted chunk is then
published once on ``<root>/f/<fleet>/xfer/<deployment_id>/s``, which every device in
the transfer subscribes to (and takes every chunk it lacks from, asked for or not), so
N devices fetching the same bundle cost about one transfer. docs/protocol.md has the rules.

Resend guard: a chunk streamed while the asking device listened (per-subscription
``listener`` token, from its first chunk request: a device drops chunks until its index
is whole) is not sent again to it: it is in the device's backlog, or lost. For requests
without numbers that holds for ``resend_guard_s`` (the stall timer asks again after it);
a device that numbers its requests flags what it asks ``again``, so the rest is skipped
however long ago it went out and the flagged ones are re-sent. Late joiners' re-sends
are held ``resend_hold_s`` to be shared.

Several servers may share one fleet's requests (``share_group``: MQTT 5 shared
subscription ``$share/<group>/...``), with no coordination: same bundle, same stream.

Start wait: a server that knows a publication's targets holds the first chunks while
they keep beginning to ask (agent/fleet/startwait.py), so the first window goes out once.

Chunk frames go out at ``chunk_qos`` (0 by default). After a batch an ACK frame (QoS 1)
tells devices the server is alive (acks but no chunks: a broker size limit), and names
the ``(listener, seq)`` of the requests the batch answered (one with a held re-send
after it): what a device still lacks of a named request was lost, not queued. Batches
that published nothing are acknowledged at most every ``ack_every_s`` (agent/fleet/ackpace.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from agent.fleet.ackpace import EVERY_S, AckPace
from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import ServedBundle
from agent.fleet.sharegroup import add_share_arg, valid_share_group
from agent.fleet.startwait import MAX_S, QUIET_S, StartWait, start_hold_until
from agent.log import get_logger
from agent.update.transfer.wire import (
    MAX_ANSWERED,
    FrameError,
    FrameKind,
    Topics,
    answerable,
    decode_request,
    encode_answered,
    encode_frame,
)

log = get_logger(__name__)
__all__ = ["ChunkServer", "ServerStats", "add_share_arg", "resend_not_needed", "valid_share_group"]

Item = tuple[int, int, int]  # (kind, file, index)
Asked = tuple[tuple[int, int], frozenset[Item]]  # a request's (listener, seq) and its items
Listener = tuple[str, str, int | None, int]  # (deployment, device, token, frame kind)
_IDLE_S = 0.05  # a request after this long without serving starts a new coalescing window
# Fault injection for tests and benchmarks: gets a batch of frames, returns what to publish.
Mangle = Callable[[list[bytes]], list[bytes]]


@dataclass(slots=True)
class ServerStats:
    requests: int = 0
    bad_requests: int = 0
    frames: int = 0
    acks: int = 0
    bytes: int = 0
    skipped_recent: int = 0
    held: int = 0  # re-sends delayed to be shared by late joiners
    resent: int = 0  # frames that had gone out before (late joiners, lost or stalled chunks)
    last_chunk_s: float = 0.0  # time.monotonic() when the latest chunk frame went out
    start_held_s: float = 0.0  # the latest deployment's first chunks: first ask -> streaming
    start_listening: int = 0  # targeted devices that had asked when its streaming began
    devices: set[str] = field(default_factory=set)


class ChunkServer:
    def __init__(
        self,
        client: FleetClient,
        topics: Topics,
        bundles: Iterable[ServedBundle],
        stop: threading.Event,
        *,
        coalesce_s: float = 0.002,
        resend_guard_s: float = 2.0,
        resend_hold_s: float = 0.1,
        chunk_qos: int = 0,
        mangle: Mangle | None = None,
        share_group: str = "",
        expect_devices: Iterable[str] = (),
        start_wait_s: float = MAX_S,
        start_quiet_s: float = QUIET_S,
        ack_every_s: float = EVERY_S,
    ) -> None:
        self._pace = AckPace(ack_every_s)  # acks of batches that published nothing
        self._mangle = mangle
        self._expect = frozenset(expect_devices)
        self._start_wait = StartWait(quiet_s=start_quiet_s, max_s=start_wait_s)
        # Per deployment: device -> when its first chunk request arrived (start wait input).
        self._first_asks: dict[str, dict[str, float]] = {}
        self._streaming: set[str] = set()
        self._share_group = share_group
        self._client = client
        self._topics = topics
        self._bundles = {b.deployment_id: b for b in bundles}
        self._stop = stop
        self._coalesce_s = coalesce_s
        self._guard_s = resend_guard_s
        self._chunk_qos = chunk_qos
        self._hold_s = resend_hold_s
        # Re-sends wait ``resend_hold_s`` so late joiners asking for the same early chunks
        # within that time share one copy: deployment -> item -> (due, listening since).
        self._held: dict[str, dict[Item, tuple[float, float]]] = {}
        # Per deployment: wanted item -> the latest "listening since" among its requesters.
        self._pending: dict[str, dict[Item, float]] = {}
        # Per deployment: the requests pooled in _pending (named by the ack after them), and
        # those waiting for a held re-send: (due, (listener, seq)).
        self._asked: dict[str, list[Asked]] = {}
        # Per deployment: pooled items a requester without numbers asked for (timed guard).
        self._timed: dict[str, set[Item]] = {}
        self._late: dict[str, list[tuple[float, tuple[int, int]]]] = {}
        self._last_sent: dict[tuple[str, Item], float] = {}
        self._listening: dict[Listener, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stats = ServerStats()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for deployment_id in self._bundles:
            self._client.subscribe(self.request_filter(deployment_id), self._on_request)
        self._thread = threading.Thread(target=self._run, name="chunk-server", daemon=True)
        self._thread.start()

    def request_filter(self, deployment_id: str) -> str:
        topic_filter = self._topics.request_filter(deployment_id)
        if self._share_group:
            return f"$share/{self._share_group}/{topic_filter}"
        return topic_filter

    def first_asks(self, deployment_id: str) -> dict[str, float]:
        """Each device that asked for chunks -> when it first did (time.monotonic())."""
        with self._lock:
            return dict(self._first_asks.get(deployment_id, {}))

    def join(self, timeout_s: float = 5.0) -> None:
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _on_request(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        # <root>/d/<dev>/xfer/<deployment_id>/req
        deployment_id = parts[-2] if len(parts) >= 3 else ""
        device = self._topics.device_of(topic) or "?"
        if deployment_id not in self._bundles:
            return
        try:
            request = decode_request(payload)
        except FrameError as exc:
            self.stats.bad_requests += 1
            log.warning("chunk_request_bad", device=device, error=str(exc))
            return
        wanted = {
            FrameKind.CHUNK: [(int(FrameKind.CHUNK), f, i) for f, i in request.chunks],
            FrameKind.INDEX: [(int(FrameKind.INDEX), 0, p) for p in request.indexes],
        }
        now = time.monotonic()
        with self._lock:
            self.stats.requests += 1
            self.stats.devices.add(device)
            if request.chunks:  # ready for chunks: what the start wait waits for
                self._first_asks.setdefault(deployment_id, {}).setdefault(device, now)
            pending = self._pending.setdefault(deployment_id, {})
            pair = answerable(request)
            if pair is not None:
                asked = frozenset(wanted[FrameKind.CHUNK] + wanted[FrameKind.INDEX])
                self._asked.setdefault(deployment_id, []).append((pair, asked))
            for kind, items in wanted.items():
                if not items:
                    continue
                # A device is subscribed before its first request reaches us (same
                # connection), but it keeps chunks only once its chunk index is whole, so it
                # listens to chunks from its first chunk request, to index pieces from its
                # first index request.
                key = (deployment_id, device, request.listener, int(kind))
                since = self._listening.setdefault(key, now)
                if request.listener is None:
                    since = now  # an old client without a token: always serve
                if pair is None or kind is FrameKind.INDEX:
                    self._timed.setdefault(deployment_id, set()).update(items)
                again = {(int(FrameKind.CHUNK), f, i) for f, i in request.again}
                for item in items:
                    asked_s = now if item in again else since  # lost: listening is no proof
                    pending[item] = max(pending.get(item, asked_s), asked_s)
        self._wake.set()

    def _next_due_s(self, now: float) -> float:
        """When a held re-send or a start wait ends (caller holds the lock)."""
        dues = [due for held in self._held.values() for due, _ in held.values()]
        for deployment_id in self._pending:
            until = self._hold_until(deployment_id, now)
            if until is not None:
                dues.append(until)
        ack_due = self._pace.due_s()
        return min([*dues, ack_due] if ack_due is not None else dues, default=now + 0.5)

    def _hold_until(self, deployment_id: str, now: float) -> float | None:
        """Until when the deployment's first chunks wait for targeted devices (None: go)."""
        if deployment_id in self._streaming:
            return None
        return start_hold_until(
            self._expect,
            self._first_asks.get(deployment_id, {}),
            now,
            self._start_wait,
            shared=bool(self._share_group),
        )

    def _start_streaming(self, deployment_id: str, now: float) -> None:
        self._streaming.add(deployment_id)
        asks = self._first_asks.get(deployment_id, {})
        self.stats.start_held_s = now - min(asks.values(), default=now)
        self.stats.start_listening = len(self._expect & asks.keys())

    def _keep_waiting(
        self,
        batch: dict[str, dict[Item, float]],
        asked: dict[str, list[Asked]],
        now: float,
    ) -> None:
        """Put the chunks of deployments still waiting back, and their requests' names
        (answered once the chunks go out; caller holds the lock)."""
        for deployment_id, items in batch.items():
            chunks = [item for item in items if item[0] == FrameKind.CHUNK]
            if not chunks:
                continue
            if deployment_id in self._streaming:
                continue
            if self._hold_until(deployment_id, now) is None:
                self._start_streaming(deployment_id, now)
                continue
            self._asked.setdefault(deployment_id, []).extend(asked.pop(deployment_id, []))
            back = self._pending.setdefault(deployment_id, {})
            for item in chunks:
                since = items.pop(item)
                back[item] = max(back.get(item, since), since)

    def _release_due(self, now: float) -> set[tuple[str, Item]]:
        """Move held re-sends that are due into the pending batch (caller holds the lock)."""
        released: set[tuple[str, Item]] = set()
        for deployment_id, held in self._held.items():
            for item, (due, since) in list(held.items()):
                if due <= now:
                    del held[item]
                    pending = self._pending.setdefault(deployment_id, {})
                    pending[item] = max(pending.get(item, since), since)
                    released.add((deployment_id, item))
        for deployment_id, late in self._late.items():
            due_now = [pair for due, pair in late if due <= now]
            late[:] = [(due, pair) for due, pair in late if due > now]
            self._asked.setdefault(deployment_id, []).extend((p, frozenset()) for p in due_now)
        return released

    def _run(self) -> None:
        idle_since = -1e18
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                timeout = min(0.5, max(0.0, self._next_due_s(now) - now))
            self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                flushed = self._pace.flush(time.monotonic())
            for deployment_id, names in flushed.items():
                bundle = self._bundles[deployment_id]
                self._ack(self._topics.stream(bundle.manifest.fleet, deployment_id), 0, names)
            with self._lock:
                released = self._release_due(time.monotonic())
                if not self._pending:
                    continue
            if time.monotonic() - idle_since >= _IDLE_S:
                # A new window after a pause: let other devices' requests for it land in this
                # batch. While the stream flows, requests pool during publishing anyway.
                self._stop.wait(self._coalesce_s)
            with self._lock:
                released |= self._release_due(time.monotonic())
                pending, self._pending = self._pending, {}
                asked, self._asked = self._asked, {}
                timed, self._timed = self._timed, {}
                self._keep_waiting(pending, asked, time.monotonic())
            for deployment_id, items in pending.items():
                if not items:
                    continue
                try:
                    answered = asked.get(deployment_id, [])
                    guarded = timed.get(deployment_id, set())
                    self._serve(self._bundles[deployment_id], items, released, answered, guarded)
                except Exception as exc:
                    log.exception("chunk_serve_failed", deployment=deployment_id, error=str(exc))
            idle_since = time.monotonic()

    def _serve(
        self,
        bundle: ServedBundle,
        items: dict[Item, float],
        released: set[tuple[str, Item]],
        asked: list[Asked],
        timed: set[Item],
    ) -> None:
        topic = self._topics.stream(bundle.manifest.fleet, bundle.deployment_id)
        now = time.monotonic()
        frames: list[bytes | bytearray] = []
        held: dict[Item, float] = {}  # item -> when its held re-send is due
        for item in sorted(items):
            key = (bundle.deployment_id, item)
            sent = self._last_sent.get(key)
            guard_s = self._guard_s if item in timed else math.inf  # numbered: "again" says
            # A released re-send was judged needed when it was held.
            if (
                sent is not None
                and key not in released
                and resend_not_needed(sent, items[item], now, guard_s)
            ):
                self.stats.skipped_recent += 1
                continue
            if sent is not None and key not in released and self._hold_s > 0:
                held[item] = self._hold(bundle.deployment_id, item, items[item], now)
                continue
            kind, file_no, index = item
            # Chunks are read straight into their frame (digest from the chunk index).
            frame: bytes | bytearray | None = (
                bundle.chunk_frame(file_no, index) if kind == FrameKind.CHUNK else None
            )
            if frame is None:
                payload = (
                    bundle.index_piece(index)
                    if kind == FrameKind.INDEX
                    else bundle.chunk(file_no, index)
                )
                if payload is None:
                    self.stats.bad_requests += 1
                    continue
                frame = encode_frame(FrameKind(kind), file_no, index, payload)
            frames.append(frame)
            self.stats.resent += int(sent is not None)
            self._last_sent[key] = now
        if self._mangle is not None:
            frames = list(self._mangle([bytes(f) for f in frames]))
        for data in frames:
            # paho publishes a bytearray as it is; FleetClient's annotation only says bytes.
            self._client.publish(topic, cast("bytes", data), qos=self._chunk_qos)
            self.stats.frames += 1
            self.stats.bytes += len(data)
        if frames:
            self.stats.last_chunk_s = time.monotonic()
        answered = []  # a request with a held re-send is named after it (not to look lost)
        for pair, wanted in asked:
            if wanted & held.keys():
                due = max(held[item] for item in wanted & held.keys())
                with self._lock:
                    self._late.setdefault(bundle.deployment_id, []).append((due, pair))
            else:
                answered.append(pair)
        with self._lock:
            names = self._pace.take(bundle.deployment_id, answered, len(frames), now)
        if names is not None:
            self._ack(topic, len(frames), names)

    def _ack(self, topic: str, frames: int, answered: list[tuple[int, int]]) -> None:
        # index = frames the batch published: a batch the guard or hold emptied must not look
        # like "chunks sent, none arrived" (too_large); names past MAX_ANSWERED: more acks.
        for n, start in enumerate(range(0, max(1, len(answered)), MAX_ANSWERED)):
            names = encode_answered(answered[start : start + MAX_ANSWERED])
            ack = encode_frame(FrameKind.ACK, 0, frames if n == 0 else 0, names)
            self._client.publish(topic, ack, qos=1)
            self.stats.acks += 1

    def _hold(self, deployment_id: str, item: Item, since: float, now: float) -> float:
        """Hold a re-send to share it with other late joiners; when it is due."""
        with self._lock:
            held = self._held.setdefault(deployment_id, {})
            due, old_since = held.get(item, (now + self._hold_s, since))
            held[item] = (due, max(old_since, since))
        self.stats.held += 1
        return due


def resend_not_needed(
    sent_s: float, listening_since_s: float, now_s: float, guard_s: float
) -> bool:
    """Every requester was listening when the chunk went out, and that was within the guard."""
    return sent_s >= listening_since_s and now_s - sent_s < guard_s
