"""Chunk server: answers device chunk requests on one shared stream topic per deployment.

Requests from every device are pooled for ``coalesce_s``; each wanted chunk is then
published once on ``<root>/f/<fleet>/xfer/<deployment_id>/s``, which every device in
the transfer subscribes to, so N devices fetching the same bundle cost about one
transfer. A chunk sent moments ago is not sent again for ``resend_guard_s`` (the
devices that asked already have it in flight). After every batch a tiny ACK frame
tells devices the server is alive, so a broker that drops chunk-sized messages shows
as "acks but no chunks" on the device instead of a silent stall.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import ServedBundle
from agent.log import get_logger
from agent.update.transfer.wire import FrameError, FrameKind, Topics, decode_request, encode_frame

log = get_logger(__name__)

Item = tuple[int, int, int]  # (kind, file, index)
# Fault injection for tests and benchmarks: gets a batch of frames, returns what to publish.
Mangle = Callable[[list[bytes]], list[bytes]]


@dataclass(slots=True)
class ServerStats:
    requests: int = 0
    bad_requests: int = 0
    frames: int = 0
    bytes: int = 0
    skipped_recent: int = 0
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
        resend_guard_s: float = 0.25,
        mangle: Mangle | None = None,
    ) -> None:
        self._mangle = mangle
        self._client = client
        self._topics = topics
        self._bundles = {b.deployment_id: b for b in bundles}
        self._stop = stop
        self._coalesce_s = coalesce_s
        self._guard_s = resend_guard_s
        self._pending: dict[str, set[Item]] = {}
        self._last_sent: dict[tuple[str, Item], float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stats = ServerStats()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for deployment_id in self._bundles:
            self._client.subscribe(self._topics.request_filter(deployment_id), self._on_request)
        self._thread = threading.Thread(target=self._run, name="chunk-server", daemon=True)
        self._thread.start()

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
        items = {(int(FrameKind.CHUNK), f, i) for f, i in request.chunks}
        items |= {(int(FrameKind.INDEX), 0, p) for p in request.indexes}
        with self._lock:
            self.stats.requests += 1
            self.stats.devices.add(device)
            self._pending.setdefault(deployment_id, set()).update(items)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(0.5):
                continue
            self._wake.clear()
            # Let requests from other devices for the same window land in this batch.
            self._stop.wait(self._coalesce_s)
            with self._lock:
                pending, self._pending = self._pending, {}
            for deployment_id, items in pending.items():
                try:
                    self._serve(self._bundles[deployment_id], sorted(items))
                except Exception as exc:
                    log.exception("chunk_serve_failed", deployment=deployment_id, error=str(exc))

    def _serve(self, bundle: ServedBundle, items: list[Item]) -> None:
        topic = self._topics.stream(bundle.manifest.fleet, bundle.deployment_id)
        now = time.monotonic()
        frames: list[bytes] = []
        for item in items:
            key = (bundle.deployment_id, item)
            if now - self._last_sent.get(key, -1e9) < self._guard_s:
                self.stats.skipped_recent += 1
                continue
            kind, file_no, index = item
            payload = (
                bundle.index_piece(index)
                if kind == FrameKind.INDEX
                else bundle.chunk(file_no, index)
            )
            if payload is None:
                self.stats.bad_requests += 1
                continue
            frames.append(encode_frame(FrameKind(kind), file_no, index, payload))
            self._last_sent[key] = now
        if self._mangle is not None:
            frames = self._mangle(frames)
        for frame in frames:
            self._client.publish(topic, frame, qos=1)
            self.stats.frames += 1
            self.stats.bytes += len(frame)
        self._client.publish(topic, encode_frame(FrameKind.ACK, 0, 0, b""), qos=1)
