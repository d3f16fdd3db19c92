"""The MQTT chunk pull of one bundle: subscribe to its stream, ask for chunks, check each.

Runs on the update service's thread (``pull``, the driver); ``on_stream`` runs on the
network thread, hands frames to the active session and, when a frame frees the window
or an ack names one of its requests, asks for the next chunks itself (issue 19.3,
fourth session): waking the driver for that cost a thread switch per window move, and
on a CPU-starved fleet each such wake-up met the network thread busy with the backlog
(they contend for the interpreter lock), so the driver now wakes only for what has a
time (stall expiries, progress reports, the deadline) and to finish. The subscribed
stream is remembered on disk so a restart after a kill can drop it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.clock import Clock
from agent.errors import AgentError
from agent.log import get_logger
from agent.update.transfer.parts import WriteResult
from agent.update.transfer.planner import PlannerLimits
from agent.update.transfer.report import OpReporter
from agent.update.transfer.session import IndexRef, TransferSession
from agent.update.transfer.settings import Bus, ServiceSettings, Superseded
from agent.update.transfer.source import chunk_table
from agent.update.transfer.wire import ChunkRequest, FrameError, FrameKind, Topics, decode_frame
from agent.update.trust.verify import Verified

log = get_logger(__name__)
MAX_QUIET_REPORT_S = 60.0  # progress report period once nothing has arrived for a while
# The driver sleeps until its next stall expiry or progress report (arrivals that free the
# window wake it), within these bounds: at most 20 wake-ups a second, as the fixed 50 ms
# poll it replaces, and a look at ``stop``/``superseded`` at least once a second.
MIN_WAIT_S = 0.05
MAX_WAIT_S = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Active:
    """The transfer ``on_stream`` feeds: its deployment, session and request topic."""

    deployment: str
    session: TransferSession
    request_topic: str


def driver_wait_s(now_s: float, *dues_s: float) -> float:
    """How long the transfer driver may sleep: until the earliest due time, clamped."""
    return min(MAX_WAIT_S, max(MIN_WAIT_S, min(dues_s, default=now_s) - now_s))


class StreamPull:
    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        settings: ServiceSettings,
        *,
        transfer_root: Path,
        reporter: OpReporter,
        stop: threading.Event,
        clock: Clock,
    ) -> None:
        self._bus = bus
        self._topics = topics
        self.settings = settings
        self._transfer_root = transfer_root
        self._reporter = reporter
        self._stop = stop
        self._clock = clock
        self._frames = threading.Event()
        self._active: _Active | None = None
        # Held while a tick's request is built and published, so requests go out in the
        # order of their numbers (acks name them; an answered later one means an earlier
        # one was lost) whichever thread ticks.
        self._asking = threading.Lock()
        # When the driver's current wait ends (monotonic); infinite while it is not waiting,
        # so a due time on_stream brings then makes it look again before it sleeps.
        self._driver_due_s = math.inf
        self.corrupt_frames = 0

    def wake(self) -> None:
        self._frames.set()

    # --- the stream subscription ---------------------------------------------------------

    @property
    def _stream_marker(self) -> Path:
        return self._transfer_root / "stream"

    def drop_stale_streams(self) -> None:
        """Unsubscribe what an earlier process may have left in the broker's session."""
        fleet = self.settings.fleet
        # Streams are subscribed per transfer; drop the fleet-wide wildcard that older
        # versions left in the persistent session, and the stream of a transfer this
        # process was killed in (a resumed transfer subscribes again).
        self._bus.unsubscribe(f"{self._topics.root}/f/{fleet}/xfer/+/s")
        try:
            stale = self._stream_marker.read_text(encoding="utf-8").strip()
        except OSError:
            stale = ""
        if stale.startswith(f"{self._topics.root}/f/{fleet}/xfer/"):
            self._bus.unsubscribe(stale)

    def _mark_stream(self, topic: str | None) -> None:
        """Remember the subscribed stream, so a restart after a kill can unsubscribe it."""
        try:
            if topic is None:
                self._stream_marker.unlink(missing_ok=True)
            else:
                self._transfer_root.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._stream_marker.write_text(topic, encoding="utf-8")
        except OSError as exc:  # a full disk costs at most a stale subscription
            log.warning("stream_marker_failed", error=str(exc))

    def on_stream(self, topic: str, payload: bytes) -> None:
        active = self._active
        # <root>/f/<fleet>/xfer/<deployment_id>/s; frames of other transfers are stale: dropped.
        if active is None or topic.rsplit("/", 2)[-2] != active.deployment:
            return
        try:
            frame = decode_frame(payload)
        except FrameError:
            self.corrupt_frames += 1
            return
        # Chunks are checked against the signed chunk table (one hash); index pieces have
        # no per-piece entry, so their header hash catches damage before the index join.
        if frame.kind is FrameKind.INDEX and not frame.header_ok:
            self.corrupt_frames += 1
            return
        session = active.session
        result = session.on_frame(frame, self._clock.monotonic_s())
        # Tick only when the window may have moved: duplicates and chunks that failed
        # their check change nothing (on a busy shared stream most frames are that), and
        # a request needs ``min_batch`` free slots anyway.
        if result is WriteResult.REJECTED:
            self.corrupt_frames += 1  # damaged in transit or not of this bundle: dropped
        elif (result is None or result is WriteResult.WRITTEN) and session.wants_tick:
            self._ask_here(active)

    def _ask_here(self, active: _Active) -> None:
        """On the network thread: send what a tick asks for; wake the driver only when it
        must act (finish, fail) or something fell due before its wait ends."""
        if self._stop.is_set() or not self._asking.acquire(blocking=False):
            # The driver is ticking now; the flag makes it tick once more after that.
            self._wake_driver()
            return
        try:
            tick = active.session.tick(self._clock.monotonic_s())
            if tick.request is not None:
                self._send(active.request_topic, tick.request)
        except AgentError:  # the transfer cannot go on: the driver's tick raises it again
            self._wake_driver()
            return
        finally:
            self._asking.release()
        if tick.done or active.session.next_due_s() < self._driver_due_s:
            self._wake_driver()

    def _wake_driver(self) -> None:
        # Already set: the driver has not run since, and it clears the flag before it looks
        # at the session, so it sees this too. Setting it again would take the event's
        # lock, which a driver preempted on its way out of the wait holds.
        if not self._frames.is_set():
            self._frames.set()

    def _send(self, topic: str, request: ChunkRequest) -> None:
        try:
            self._bus.publish(topic, request.encode(), qos=1)
        except AgentError as exc:  # link down: the stall timer asks again
            log.debug("chunk_request_unsent", error=str(exc))

    # --- the pull ----------------------------------------------------------------------------

    def pull(
        self,
        verified: Verified,
        common: dict[str, Any],
        started_s: float,
        superseded: Callable[[], bool],
    ) -> Path | None:
        """The bundle's files directory; None when stopping (the bitmap resumes it later)."""
        manifest = verified.manifest
        dep = manifest.deployment_id
        elapsed = self._clock.monotonic_s() - started_s
        limits = PlannerLimits(
            window=self.settings.window,
            stall_s=self.settings.stall_s,
            deadline_s=max(0.001, self.settings.deadline_s - elapsed),
            # "Busy" must be well inside a stall period, or a lost chunk waits for ever longer.
            busy_s=min(1.0, self.settings.stall_s / 2),
            # Fewer, larger requests: ask once a quarter of the window is free.
            min_batch=max(1, self.settings.window // 4),
        )
        session = TransferSession(
            directory=self._transfer_root / manifest.chunk_index.sha256,
            index_ref=IndexRef(
                manifest.chunk_index.length, manifest.chunk_index.sha256, manifest.chunk_size
            ),
            parse_index=functools.partial(chunk_table, manifest),
            limits=limits,
            now_s=self._clock.monotonic_s(),
            listener=secrets.randbelow(1 << 31),
        )
        request_topic = self._topics.request(self.settings.device_id, dep)
        stream_topic = self._topics.stream(manifest.fleet, dep)
        self._active = _Active(dep, session, request_topic)
        # Subscribed only while transferring. SUBSCRIBE goes out before our first request on
        # the same connection, so the broker routes the answer to us.
        self._mark_stream(stream_topic)
        self._bus.subscribe(stream_topic, self.on_stream)
        last_progress = 0.0
        # Nothing arriving (no chunk server yet): report less and less often, not every second.
        every_s, last_done = self.settings.progress_interval_s, -1
        try:
            while not self._stop.is_set():
                if superseded():
                    raise Superseded
                now = self._clock.monotonic_s()
                with self._asking:
                    tick = session.tick(now)
                    if tick.request is not None:
                        self._send(request_topic, tick.request)
                if tick.done:
                    session.finish()
                    return session.files_dir
                if now - last_progress >= every_s:
                    last_progress = now
                    progress = session.progress()
                    moved = progress.bytes_done != last_done
                    last_done = progress.bytes_done
                    every_s = (
                        self.settings.progress_interval_s
                        if moved
                        else min(every_s * 2, MAX_QUIET_REPORT_S)
                    )
                    self._reporter.report(
                        dep, "downloading", progress=dataclasses.asdict(progress), **common
                    )
                # No fixed poll: stall expiries are known in advance, and a rollout on a busy
                # fleet lasts many seconds of idle ticks otherwise (issue 19.3).
                now = self._clock.monotonic_s()
                wait_s = driver_wait_s(now, session.next_due_s(), last_progress + every_s)
                # Read by on_stream: a due time it brings before this wakes the driver.
                self._driver_due_s = now + wait_s
                self._frames.wait(wait_s)
                self._driver_due_s = math.inf
                self._frames.clear()
            return None
        finally:
            self._active = None
            try:
                self._bus.unsubscribe(stream_topic)
            except AgentError as exc:  # link down: the broker session is told on reconnect
                log.debug("stream_unsubscribe_unsent", error=str(exc))
            self._mark_stream(None)
            session.close()
