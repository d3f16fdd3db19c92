"""One bundle transfer: fetch the chunk index, then the chunks, deciding what to ask for next.

Thread-safe: frames arrive on the MQTT network thread, ``tick`` runs on the
transfer driver. No IO except the part files; publishing requests is the caller's.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import DownloadError, Reason
from agent.fsutil import atomic_write_bytes
from agent.log import get_logger
from agent.update.transfer.bitmap import ChunkBitmap
from agent.update.transfer.budget import translate_os_error
from agent.update.transfer.parts import PartFiles, WriteResult
from agent.update.transfer.planner import PlannerLimits, Verdict, WindowPlanner
from agent.update.transfer.table import ChunkTable
from agent.update.transfer.wire import ChunkRequest, Frame, FrameError, FrameKind, decode_answered

log = get_logger(__name__)

ParseIndex = Callable[[bytes], ChunkTable]


@dataclass(frozen=True, slots=True)
class IndexRef:
    """The chunk index as the signed manifest names it."""

    length: int
    sha256: str
    chunk_size: int


@dataclass(frozen=True, slots=True)
class Progress:
    phase: str
    chunks_done: int
    chunks_total: int
    bytes_done: int
    bytes_total: int
    duplicates: int
    rejected: int
    stalls: int
    recovered: int
    requested: int


@dataclass(frozen=True, slots=True)
class Tick:
    request: ChunkRequest | None
    done: bool


class TransferSession:
    def __init__(
        self,
        *,
        directory: Path,
        index_ref: IndexRef,
        parse_index: ParseIndex,
        limits: PlannerLimits,
        now_s: float,
        max_empty_stalls: int = 3,
        listener: int | None = None,
    ) -> None:
        self.directory = directory
        self.index_ref = index_ref
        self._parse_index = parse_index
        self.limits = limits
        self.max_empty_stalls = max_empty_stalls
        self.listener = listener
        self._lock = threading.Lock()
        self._started_s = now_s
        self.parts: PartFiles | None = None
        self.acks = 0
        self.frames_seen = 0
        self._answer_read = False  # an ack named one of our requests since the last tick
        # A disk error on the network thread (ENOSPC writing a chunk): raised by the next tick.
        self.failure: DownloadError | None = None
        self._index_pieces: dict[int, bytes] = {}
        pieces = max(1, -(-index_ref.length // index_ref.chunk_size))
        self._planner = WindowPlanner(ChunkBitmap(pieces), limits, now_s)
        self._index_path = directory / "index"
        self._try_load_index()

    # -- index phase -----------------------------------------------------------

    def _try_load_index(self) -> None:
        try:
            data = self._index_path.read_bytes()
        except OSError:
            return
        if self._index_ok(data):
            self._start_chunks(data, persist=False)

    def _index_ok(self, data: bytes) -> bool:
        return (
            len(data) == self.index_ref.length
            and hashlib.sha256(data).hexdigest() == self.index_ref.sha256
        )

    def _start_chunks(self, data: bytes, persist: bool) -> None:
        try:
            table = self._parse_index(data)
        except ValueError as exc:
            raise DownloadError(Reason.INCONSISTENT, f"chunk index unusable: {exc}") from exc
        if table.chunk_size != self.index_ref.chunk_size:
            raise DownloadError(Reason.INCONSISTENT, "chunk index and manifest chunk sizes differ")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if persist:
            atomic_write_bytes(self._index_path, data, mode=0o600)
        # Bitmap saves cost an fsync each; chunks written after the last save are re-verified
        # from disk on resume, so a kill loses nothing and a power cut at most these chunks.
        parts = PartFiles(self.directory, table, persist_every=max(64, 4 * self.limits.window))
        parts.open()
        self.parts = parts
        self._planner = self._next_planner(parts.bitmap, self._planner.started_s)

    def _next_planner(self, bitmap: ChunkBitmap, started_s: float) -> WindowPlanner:
        """A planner for the next phase; request numbers go on (acks name them per listener)."""
        old = self._planner
        return WindowPlanner(
            bitmap,
            self.limits,
            started_s,
            jitter=old.jitter,
            next_seq=old.next_seq,
            attributing=old.attributing,
        )

    def _on_ack(self, frame: Frame, now_s: float) -> None:
        if frame.index > 0:  # the server published frames in that batch
            self.acks += 1
        if not frame.payload or self.listener is None:
            return  # an older server: no answered requests named
        try:
            answered = decode_answered(frame.payload)
        except FrameError:
            return  # not ours to judge: the stall timer still asks again
        mine = [seq for listener, seq in answered if listener == self.listener]
        if mine:
            self._planner.answered(max(mine), now_s)
            self._answer_read = True  # the driver's next due time moved closer: wake it

    def _on_index_piece(self, frame: Frame, now_s: float) -> WriteResult | None:
        """Keep an index piece; REJECTED (counted as a corrupt frame) when it cannot be one
        of this index: past its end, or not the length its place there gives."""
        piece = frame.index
        size = self.index_ref.chunk_size
        bitmap = self._planner.bitmap
        if piece >= bitmap.size:
            return WriteResult.REJECTED
        if piece in bitmap:
            return None  # a duplicate (another device's request, a QoS 1 redelivery)
        want = min(size, self.index_ref.length - piece * size)
        if len(frame.payload) != want:
            return WriteResult.REJECTED
        self._index_pieces[piece] = bytes(frame.payload)
        bitmap.add(piece)
        self._planner.arrived(piece, now_s, fresh=True)
        if bitmap.complete:
            data = b"".join(self._index_pieces[i] for i in range(bitmap.size))
            self._index_pieces.clear()
            if not self._index_ok(data):
                # Pieces carry no per-piece hash; start the index over from scratch.
                log.warning("transfer_index_mismatch", dir=str(self.directory))
                self._planner = self._next_planner(ChunkBitmap(bitmap.size), now_s)
                return None
            self._start_chunks(data, persist=True)
        return None

    # -- frames and ticks ------------------------------------------------------

    def on_frame(self, frame: Frame, now_s: float) -> WriteResult | None:
        try:
            return self._on_frame(frame, now_s)
        except OSError as exc:
            with self._lock:
                if self.failure is None:
                    self.failure = translate_os_error(exc, "writing the transfer")
                    log.warning("transfer_write_failed", error=str(exc), dir=str(self.directory))
            return None
        except DownloadError as exc:  # an index that does not fit the manifest
            with self._lock:
                self.failure = self.failure or exc
            return None

    def _on_frame(self, frame: Frame, now_s: float) -> WriteResult | None:
        with self._lock:
            if self.failure is not None:
                return None
            self.frames_seen += 1
            self._planner.saw_frame(now_s)
            if frame.kind is FrameKind.ACK:
                self._on_ack(frame, now_s)
                return None
            if frame.kind is FrameKind.INDEX:
                return self._on_index_piece(frame, now_s) if self.parts is None else None
            if self.parts is None:
                return None
            result = self.parts.write(frame.file, frame.index, frame.payload)
            if result is WriteResult.WRITTEN:
                global_index = self.parts.table.to_global(frame.file, frame.index)
                self._planner.arrived(global_index, now_s, fresh=True)
            return result

    @property
    def wants_tick(self) -> bool:
        """A tick now could send a request or finish (the driver need not wake otherwise)."""
        return (
            self.parts is None
            or self.parts.bitmap.complete
            or self._planner.wants_plan
            or self._answer_read
        )

    def next_due_s(self) -> float:
        """When a tick could ask for something though no frame arrives (a stall, the deadline)."""
        with self._lock:
            return self._planner.next_due_s()

    def tick(self, now_s: float) -> Tick:
        """What to request now; raises DownloadError when the transfer cannot finish."""
        with self._lock:
            if self.failure is not None:
                raise self.failure
            self._answer_read = False
            plan = self._planner.plan(now_s)
            if plan.verdict is Verdict.DEADLINE:
                raise DownloadError(
                    Reason.SLOW_TRANSFER,
                    f"transfer not finished after {self.limits.deadline_s:.0f} s",
                )
            if (
                self._planner.empty_stalls >= self.max_empty_stalls
                and self.acks > 0
                and self._planner.received_this_run == 0
            ):
                # The server answers (small acks arrive) but no chunk ever does: the broker
                # drops messages of chunk size (message_size_limit / max_packet_size).
                raise DownloadError(
                    Reason.TOO_LARGE,
                    f"no chunk of {self.index_ref.chunk_size} bytes arrives while control "
                    "messages do; the broker's message size limit is below the chunk size",
                    chunk_size=self.index_ref.chunk_size,
                )
            if plan.verdict is Verdict.COMPLETE:
                return Tick(None, done=self.parts is not None)
            if not plan.request:
                return Tick(None, done=False)
            if self.parts is None:
                request = ChunkRequest(
                    indexes=tuple(plan.request), listener=self.listener, seq=plan.seq
                )
                return Tick(request, done=False)
            table = self.parts.table
            chunks = tuple(table.to_local(i) for i in plan.request)
            again = tuple(table.to_local(i) for i in plan.again)
            request = ChunkRequest(chunks=chunks, listener=self.listener, seq=plan.seq, again=again)
            return Tick(request, done=False)

    def finish(self) -> list[Path]:
        with self._lock:
            if self.parts is None or not self.parts.bitmap.complete:
                raise DownloadError(Reason.INTERRUPTED, "transfer is not complete")
            try:
                return self.parts.finish()
            except OSError as exc:
                raise translate_os_error(exc, "finishing the transfer") from exc

    def progress(self) -> Progress:
        parts = self.parts
        if parts is None:
            return Progress(
                "index", 0, 0, 0, 0, 0, 0, self._planner.stalls, 0, self._planner.requested_total
            )
        table = parts.table
        done = parts.bitmap.count
        bytes_done = min(table.total_length, done * table.chunk_size)
        return Progress(
            phase="chunks",
            chunks_done=done,
            chunks_total=table.total_chunks,
            bytes_done=bytes_done,
            bytes_total=table.total_length,
            duplicates=parts.duplicates,
            rejected=parts.rejected,
            stalls=self._planner.stalls,
            recovered=parts.recovered,
            requested=self._planner.requested_total,
        )

    def close(self) -> None:
        with self._lock:
            if self.parts is not None:
                try:
                    self.parts.flush()
                except OSError as exc:  # full disk: the bitmap lags, resume re-verifies gaps
                    log.warning("transfer_flush_failed", error=str(exc))
                self.parts.close()

    @property
    def files_dir(self) -> Path:
        return self.directory / "files"

    @staticmethod
    def remove(directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    def discard(self) -> None:
        with self._lock:
            if self.parts is not None:
                self.parts.discard()
                self.parts = None
