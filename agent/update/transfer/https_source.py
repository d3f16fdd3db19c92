"""Bundle files from the manifest's HTTPS URL, by byte ranges of the missing chunks only.

The transfer directory, index, per-chunk checks and bitmap are the MQTT path's
(``TransferSession`` / ``PartFiles``): the chunk index is fetched whole and must hash
to the signed value; then, file by file, the first run of missing chunks (at most
``max_range_bytes``) is asked for with ``Range: bytes=a-b`` and every chunk of the
body is checked against the index before it is written at its offset. A dropped
connection, a restart or a fallback to MQTT therefore resumes from the bitmap.

Servers that ignore Range answer 200 with the whole file: the body is read from
offset 0, chunks already present are skipped, missing ones are verified and
written, and the connection is closed as soon as the file has no gap left. A 206
for another range than the one asked for is dropped unread, and from then on the
transfer asks for whole files (the same 200 handling). Either way nothing unverified
reaches the part files. Transient failures are retried with jittered backoff until
the overall deadline (``slow_transfer``).
"""

from __future__ import annotations

import functools
import random
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent.clock import Clock, SystemClock
from agent.errors import DownloadError, Reason, SourceError
from agent.log import get_logger
from agent.retry import Backoff
from agent.update.transfer.https_client import HttpsClient, HttpsSettings, Reply, check_host
from agent.update.transfer.parts import WriteResult
from agent.update.transfer.planner import PlannerLimits
from agent.update.transfer.session import IndexRef, TransferSession
from agent.update.transfer.source import KeepGoing, OnProgress, chunk_table
from agent.update.transfer.wire import Frame, FrameKind
from agent.update.trust.manifest import HttpsSource, Manifest

log = get_logger(__name__)


@dataclass(slots=True)
class FetchStats:
    requests: int = 0
    body_bytes: int = 0  # every body byte read, verified or not
    rejected: int = 0
    retries: int = 0
    whole_file: bool = False  # the server's range support was found wanting


class HttpsFetcher:
    """``BundleFetcher`` over HTTPS; one transfer at a time (the update service's thread)."""

    def __init__(
        self,
        settings: HttpsSettings,
        stop: threading.Event,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._stop = stop
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.last_stats = FetchStats()

    def fetch(
        self,
        manifest: Manifest,
        directory: Path,
        deadline_s: float,
        keep_going: KeepGoing,
        on_progress: OnProgress,
    ) -> Path | None:
        source = manifest.https
        if source is None:
            raise ValueError("manifest names no HTTPS source")
        check_host(source.url, self.settings.allowed_hosts)
        now = self._clock.monotonic_s()
        session = TransferSession(
            directory=directory,
            index_ref=IndexRef(
                manifest.chunk_index.length, manifest.chunk_index.sha256, manifest.chunk_size
            ),
            parse_index=functools.partial(chunk_table, manifest),
            limits=PlannerLimits(deadline_s=deadline_s),
            now_s=now,
        )
        transfer = _Transfer(self, manifest, session, keep_going, on_progress)
        self.last_stats = transfer.stats
        try:
            return transfer.run(now + deadline_s)
        finally:
            transfer.client.close()
            session.close()
            log.info(
                "https_transfer_ended",
                host=urlsplit(source.url).hostname,
                requests=transfer.stats.requests,
                body_bytes=transfer.stats.body_bytes,
                rejected=transfer.stats.rejected,
                retries=transfer.stats.retries,
            )


class _Transfer:
    def __init__(
        self,
        owner: HttpsFetcher,
        manifest: Manifest,
        session: TransferSession,
        keep_going: KeepGoing,
        on_progress: OnProgress,
    ) -> None:
        self.settings = owner.settings
        self.clock = owner._clock  # noqa: SLF001 (the owner's collaborators, one transfer)
        self.stop = owner._stop  # noqa: SLF001 (same)
        self.rng = owner._rng  # noqa: SLF001 (same)
        self.manifest = manifest
        self.source: HttpsSource = manifest.https or HttpsSource("")
        self.session = session
        self.keep_going = keep_going
        self.on_progress = on_progress
        self.client = HttpsClient(self.settings)
        self.stats = FetchStats()
        self.rejects: Counter[int] = Counter()
        self.index_rejects = 0
        self.deadline_at = 0.0

    def run(self, deadline_at: float) -> Path | None:
        self.deadline_at = deadline_at
        backoff = Backoff(
            base_s=self.settings.retry_base_s, cap_s=self.settings.retry_cap_s, rng=self.rng
        )
        while self.keep_going():
            self._check_deadline()
            parts = self.session.parts
            before = parts.bitmap.count if parts is not None else -1
            try:
                if parts is None:
                    self._fetch_index()
                elif parts.bitmap.complete:
                    self.session.finish()  # every chunk present, every length the signed one
                    return self.session.files_dir
                else:
                    self._fetch_run()
            except SourceError as exc:
                if not exc.transient:
                    raise
                parts = self.session.parts
                if parts is not None and parts.bitmap.count > before:
                    backoff.reset()  # it was getting somewhere: try again soon
                self.stats.retries += 1
                delay = min(backoff.next_delay_s(), max(0.0, deadline_at - self._now()))
                log.info("https_retry", error=exc.message, delay_s=round(delay, 2))
                if self.stop.wait(delay):
                    return None
            finally:
                self.stats.requests = self.client.requests
        return None

    def _now(self) -> float:
        return self.clock.monotonic_s()

    def _check_deadline(self) -> None:
        if self._now() > self.deadline_at:
            raise DownloadError(
                Reason.SLOW_TRANSFER,
                f"transfer not finished after {self.session.limits.deadline_s:.0f} s",
            )

    def _fetch_index(self) -> None:
        ref = self.manifest.chunk_index
        self._get(self.source.file_url(ref.name), ref.length, 0, ref.length - 1)
        data = self._read(ref.length)
        self.client.release()
        size = self.manifest.chunk_size
        now = self._now()
        for piece, offset in enumerate(range(0, len(data), size)):
            frame = Frame(FrameKind.INDEX, 0, piece, data[offset : offset + size], b"")
            self.session.on_frame(frame, now)
        if self.session.parts is None:  # the joined index did not hash to the signed value
            self.index_rejects += 1
            self.stats.rejected += 1
            if self.index_rejects >= self.settings.max_chunk_rejects:
                raise SourceError(
                    Reason.HASH_MISMATCH,
                    f"chunk index from {self.source.url} does not match the manifest",
                    transient=False,
                )
            raise SourceError(Reason.HASH_MISMATCH, "chunk index hash differs", transient=True)

    def _get(self, url: str, length: int, start: int, end: int) -> Reply:
        """GET a range; a 200 reply carries the whole file from offset 0."""
        try:
            return self.client.get(url, length, start, end)
        except ValueError as exc:
            if self.stats.whole_file:
                raise SourceError(
                    Reason.DOWNLOAD_FAILED, f"GET {url}: {exc}", transient=False
                ) from exc
            # Range support cannot be trusted: whole files from now on (still verified per chunk).
            self.stats.whole_file = True
            log.warning("https_range_mismatch", url=url, error=str(exc))
            raise SourceError(Reason.DOWNLOAD_FAILED, str(exc), transient=True) from exc

    def _read(self, size: int) -> bytes:
        data = self.client.read(size)
        self.stats.body_bytes += len(data)
        return data

    def _fetch_run(self) -> None:
        parts = self.session.parts
        if parts is None:
            return
        table = parts.table
        file_no, first = table.to_local(parts.bitmap.missing(limit=1)[0])
        entry = table.files[file_no]
        base = table.first_global(file_no)
        size = table.chunk_size
        count = len(entry.chunks)
        last = first
        max_chunks = max(1, self.settings.max_range_bytes // size)
        while (
            last + 1 < count
            and last + 1 - first < max_chunks
            and base + last + 1 not in parts.bitmap
        ):
            last += 1
        if self.stats.whole_file:
            first, last = 0, count - 1
        reply = self._get(
            self.source.file_url(entry.name),
            entry.length,
            first * size,
            min(entry.length, (last + 1) * size) - 1,
        )
        start = reply.start
        if reply.status == 200:  # the whole file (Range ignored): use all of it
            last = count - 1
        gaps = {k for k in range(start // size, last + 1) if base + k not in parts.bitmap}
        for index in range(start // size, last + 1):
            if not gaps or not self.keep_going():
                break  # nothing left to gain from this body (release closes the connection)
            self._check_deadline()
            data = self._read(table.chunk_length(file_no, index))
            if index not in gaps:
                continue  # present already (a server that ignored Range sends it again)
            result = self.session.on_frame(
                Frame(FrameKind.CHUNK, file_no, index, data, b""), self._now()
            )
            if result is WriteResult.REJECTED:
                self._rejected(base + index, entry.name, index)
            elif result is WriteResult.WRITTEN:
                gaps.discard(index)
                self.on_progress(self.session.progress())
        self.client.release()

    def _rejected(self, global_index: int, name: str, index: int) -> None:
        self.rejects[global_index] += 1
        self.stats.rejected += 1
        log.warning("https_chunk_rejected", file=name, chunk=index)
        if self.rejects[global_index] >= self.settings.max_chunk_rejects:
            self.client.close()
            raise SourceError(
                Reason.HASH_MISMATCH,
                f"chunk {index} of {name} from {self.source.url} failed its hash "
                f"{self.rejects[global_index]} times",
                transient=False,
            )
