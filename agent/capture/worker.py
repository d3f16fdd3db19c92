"""The capture thread of one camera: drain the source into the ring, reopen on stalls.

A read that blocks forever (an RTSP drop, a starved pipe) cannot be interrupted from
Python, so stalls are detected from outside by ``check_stall`` (called by the
pipeline's monitor): the stuck reader is abandoned (it exits when its read returns)
and a fresh reader reopens the source after a jittered, capped backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.capture.base import Source
from agent.capture.ring import FrameRing
from agent.errors import CaptureError
from agent.log import get_logger
from agent.retry import Backoff
from agent.stats import HourCounter, RateWindow

log = get_logger(__name__)

READ_RETRY_S = 0.02  # pause after a failed read before trying again
STABLE_AFTER_S = 30.0  # frames for this long reset the backoff


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    stall_timeout_s: float = 20.0
    reconnect_base_s: float = 0.5
    reconnect_max_s: float = 60.0


class CameraCapture:
    def __init__(
        self,
        name: str,
        opener: Callable[[], Source],
        ring: FrameRing,
        stop: threading.Event,
        settings: CaptureSettings | None = None,
    ) -> None:
        self.name = name
        self._opener = opener
        self.ring = ring
        self._stop = stop
        self._settings = settings or CaptureSettings()
        self._backoff = Backoff(
            base_s=self._settings.reconnect_base_s, cap_s=self._settings.reconnect_max_s
        )
        self._generation = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.captured = RateWindow()
        self.reconnects = HourCounter()
        self.stalls = HourCounter()
        self.open_failures = 0
        self.opened_once = False
        self.ended = False
        self.connected = False
        self.last_error = ""
        self._last_progress_s = time.monotonic()  # last frame, or the start of the current wait

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._spawn(delay_s=0.0)

    def join(self, timeout_s: float) -> bool:
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def _spawn(self, delay_s: float) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._last_progress_s = time.monotonic() + delay_s
        self._thread = threading.Thread(
            target=self._run, args=(generation, delay_s), name=f"capture:{self.name}", daemon=True
        )
        self._thread.start()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    # --- the reader ----------------------------------------------------------------

    def _run(self, generation: int, delay_s: float) -> None:
        if delay_s and self._stop.wait(delay_s):
            return
        while self._current(generation):
            source = self._open()
            if source is None:
                self._wait_backoff()
                continue
            try:
                finished = self._drain(source, generation)
            except Exception as exc:  # a source bug must not kill the camera for good
                log.exception("capture_failed", camera=self.name, error=str(exc))
                finished = False
            finally:
                if generation == self._generation:
                    self.connected = False
                try:
                    source.release()
                except Exception as exc:
                    log.warning("source_release_failed", camera=self.name, error=str(exc))
            if finished and generation == self._generation:
                self.ended = True
                log.info("source_ended", camera=self.name)
                return
            if self._current(generation):
                self._wait_backoff()

    def _open(self) -> Source | None:
        try:
            source = self._opener()
        except CaptureError as exc:
            self.open_failures += 1
            self.last_error = str(exc)
            # Error on the first failure, then warnings: one clear line, not a flood.
            emit = log.error if self.open_failures == 1 else log.warning
            emit("source_open_failed", camera=self.name, error=str(exc), attempt=self.open_failures)
            return None
        if self.opened_once:
            self.reconnects.add()
            log.info("source_reconnected", camera=self.name)
        self.opened_once = True
        self.connected = True
        self.last_error = ""
        self._last_progress_s = time.monotonic()
        return source

    def _drain(self, source: Source, generation: int) -> bool:
        """Read until stop, abandonment, a stall or the end; True at the end of a finite source."""
        stable_since = time.monotonic()
        while self._current(generation):
            try:
                image = source.read()
            except CaptureError as exc:  # a live stream that cannot deliver again: reopen now
                if generation == self._generation:
                    self._record_lost(str(exc), time.monotonic())
                return False
            now = time.monotonic()
            if generation != self._generation:
                return False  # abandoned while blocked in read()
            if image is None:
                if source.ended:
                    return True
                if now - self._last_progress_s > self._settings.stall_timeout_s:
                    self._record_stall("read_failed")
                    return False
                self._stop.wait(READ_RETRY_S)
                continue
            self.ring.publish(image, now)
            self.captured.add(now)
            self._last_progress_s = now
            if now - stable_since > STABLE_AFTER_S:
                self._backoff.reset()
        return False

    def _wait_backoff(self) -> None:
        delay = self._backoff.next_delay_s()
        self._last_progress_s = time.monotonic() + delay
        self._stop.wait(delay)

    def _record_lost(self, error: str, now: float) -> None:
        if now - self._last_progress_s > self._settings.stall_timeout_s:
            self._record_stall("read_failed")  # the read waited out the stall timeout
            return
        self.last_error = error
        log.warning("source_lost", camera=self.name, error=error)

    def _record_stall(self, why: str) -> None:
        self.stalls.add()
        self.last_error = f"stalled: no frame for {self._settings.stall_timeout_s:g} s ({why})"
        log.warning(
            "source_stalled", camera=self.name, why=why, timeout_s=self._settings.stall_timeout_s
        )

    # --- supervision (monitor thread) -------------------------------------------------

    def check_stall(self, now_s: float | None = None) -> bool:
        """Abandon a reader blocked in read() past the stall timeout; True when it did."""
        now = time.monotonic() if now_s is None else now_s
        if self.ended or self._stop.is_set() or not self.connected:
            return False
        if now - self._last_progress_s <= self._settings.stall_timeout_s:
            return False
        self._record_stall("read_blocked")
        self.connected = False
        self._spawn(delay_s=self._backoff.next_delay_s())
        return True

    def health(self, now_s: float | None = None) -> tuple[str, str]:
        now = time.monotonic() if now_s is None else now_s
        if self.ended:
            return "down", "end of stream"
        if not self.opened_once:
            return "down", self.last_error or "opening"
        if not self.connected:
            return "degraded", self.last_error or "reconnecting"
        if now - self._last_progress_s > self._settings.stall_timeout_s:
            return "degraded", "no frame recently"
        return "ok", f"{self.captured.rate(now):.1f} fps"
