"""Device side of MQTT model updates: trust root, deployments, heartbeats, chunk pulls.

One thread (``update-service``) does all the work; MQTT callbacks only store the
newest message per topic (latest wins, so nothing queues without bound) and wake
it. A deployment is verified by the update core before anything else (signature,
expiry, targeting, compatibility, version floor), so a replayed or foreign
manifest never costs a byte of download. Every phase is reported on
``op/model_update/<deployment_id>``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.clock import Clock, SystemClock
from agent.errors import AgentError, Reason, SourceError, UpdateError
from agent.log import get_logger
from agent.update.installer import Installer
from agent.update.outcome import InstallResult
from agent.update.policy import Verdict
from agent.update.transfer.freshness import FreshnessWatch
from agent.update.transfer.parts import WriteResult
from agent.update.transfer.planner import PlannerLimits
from agent.update.transfer.report import OpReporter, report_id
from agent.update.transfer.session import IndexRef, Progress, TransferSession
from agent.update.transfer.source import BundleFetcher, chunk_table
from agent.update.transfer.wire import FrameError, FrameKind, Topics, decode_frame
from agent.update.trust import load_root_bytes
from agent.update.verify import Verified

log = get_logger(__name__)
_OUTCOME = {
    "committed": ("successful", None),
    "noop": ("successful", None),
    "rolled_back": ("failed", Reason.HEALTH_FAILED),
    "inconsistent": ("failed", Reason.INCONSISTENT),
    "rejected": ("failed", None),
}


class Bus(Protocol):
    """What the service needs from the device's MQTT link (``agent.uplink.link.Link``)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object: ...

    def subscribe(self, topic_filter: str, callback: Any) -> None: ...

    def unsubscribe(self, topic_filter: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    device_id: str
    fleet: str
    window: int = 32
    stall_s: float = 5.0
    deadline_s: float = 3600.0
    progress_interval_s: float = 1.0
    freshness_check_s: float = 30.0
    # Settle an install interrupted by a restart on this thread, not the daemon's start-up.
    recover_on_start: bool = False


class Superseded(Exception):
    """A newer deployment for the same slot arrived while this one was downloading."""


class UpdateService:
    def __init__(
        self,
        bus: Bus,
        installer: Installer,
        topics: Topics,
        settings: ServiceSettings,
        stop: threading.Event,
        *,
        clock: Clock | None = None,
        https: BundleFetcher | None = None,
    ) -> None:
        self._bus = bus
        self._https = https
        self._installer = installer
        self._topics = topics
        self.settings = settings
        self._stop = stop
        self._clock = clock or SystemClock()
        state_dir = installer.state_dir
        self._transfer_root = state_dir / "transfer"
        self.reporter = OpReporter(
            bus, topics, settings.device_id, self._transfer_root / "op_states.json"
        )
        self.freshness = FreshnessWatch(
            bus,
            topics,
            settings=settings,
            installer=installer,
            path=self._transfer_root / "heartbeat.json",
            clock=self._clock,
        )
        self.freshness.on_refetch = self._refetch
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._frames = threading.Event()
        self._deploys: dict[str, bytes] = {}
        self._root: bytes | None = None
        self._active: tuple[str, TransferSession] | None = None
        self.corrupt_frames = 0
        self.results: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        fleet = self.settings.fleet
        self._bus.subscribe(self._topics.trust_root(fleet), self._on_root)
        self._bus.subscribe(self._topics.deploy_filter(fleet), self._on_deploy)
        self._bus.subscribe(self._topics.heartbeat(fleet), self.freshness.on_message)
        # Streams are subscribed per transfer (see _transfer); drop the fleet-wide wildcard
        # that older versions left in the broker's persistent session, and the stream of a
        # transfer this process was killed in (a resumed transfer subscribes again).
        self._bus.unsubscribe(f"{self._topics.root}/f/{fleet}/xfer/+/s")
        try:
            stale = self._stream_marker.read_text(encoding="utf-8").strip()
        except OSError:
            stale = ""
        if stale.startswith(f"{self._topics.root}/f/{fleet}/xfer/"):
            self._bus.unsubscribe(stale)
        self._thread = threading.Thread(target=self._run, name="update-service", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        self._wake.set()
        self._frames.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def _stream_marker(self) -> Path:
        return self._transfer_root / "stream"

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

    # --- MQTT callbacks (network thread: store and wake only) --------------------------

    def _on_root(self, _topic: str, payload: bytes) -> None:
        if payload:
            with self._lock:
                self._root = payload
            self._wake.set()

    def _on_deploy(self, topic: str, payload: bytes) -> None:
        if not payload:  # a cleared retained deployment
            return
        slot = topic.rsplit("/", 1)[-1]
        with self._lock:
            self._deploys[slot] = payload
        self._wake.set()

    def _on_stream(self, topic: str, payload: bytes) -> None:
        active = self._active
        # <root>/f/<fleet>/xfer/<deployment_id>/s; frames of other transfers are stale: dropped.
        if active is None or topic.rsplit("/", 2)[-2] != active[0]:
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
        result = active[1].on_frame(frame, self._clock.monotonic_s())
        # Wake the driver only when the window may have moved: duplicates and chunks that
        # failed their check change nothing (on a busy shared stream most frames are that).
        if result is WriteResult.REJECTED:
            self.corrupt_frames += 1  # damaged in transit or not of this bundle: dropped
        elif (result is None or result is WriteResult.WRITTEN) and active[1].wants_tick:
            # Waking the driver per chunk costs a thread switch each; a request needs
            # ``min_batch`` free slots anyway (stalls are found by its own 50 ms wait).
            self._frames.set()

    # --- worker -------------------------------------------------------------------------

    def _run(self) -> None:
        if self.settings.recover_on_start:
            try:
                for result in self._installer.recover():
                    log.info("update_recovered", slot=result.slot, outcome=result.outcome)
            except Exception as exc:
                log.exception("update_recovery_failed", error=str(exc))
        while not self._stop.is_set():
            self._wake.wait(min(1.0, self.settings.freshness_check_s))
            self._wake.clear()
            try:
                self._step()
            except Exception as exc:
                log.exception("update_service_step_failed", error=str(exc))

    def _step(self) -> None:
        self.reporter.flush()
        with self._lock:
            root, self._root = self._root, None
        if root is not None:
            self._apply_root(root)
        self.freshness.check()
        while not self._stop.is_set():
            with self._lock:
                if not self._deploys:
                    return
                slot = next(iter(self._deploys))
                envelope = self._deploys.pop(slot)
            self._deploy(slot, envelope)

    def _refetch(self, slot: str) -> None:
        # A fresh SUBSCRIBE makes the broker deliver the retained manifest again.
        self._bus.subscribe(self._topics.deploy(self.settings.fleet, slot), self._on_deploy)

    def _apply_root(self, data: bytes) -> None:
        try:
            offered = load_root_bytes(data)
            trusted = self._installer.trust.load_root()
            if offered.version <= trusted.version:
                return
            self._installer.apply_roots([data])
        except UpdateError as exc:
            log.warning("trust_root_rejected", reason=exc.reason.value, error=exc.message)

    def _deploy(self, slot: str, envelope: bytes) -> None:
        key = hashlib.sha256(envelope).hexdigest()
        try:
            verified = self._installer.verify(envelope)
        except UpdateError as exc:
            log.warning("deployment_rejected", slot=slot, reason=exc.reason.value)
            doc = self.reporter.report(
                report_id(envelope), "failed", exc.reason, detail=exc.message, key=key
            )
            self.results.append(doc)
            return
        manifest = verified.manifest
        dep = manifest.deployment_id
        common: dict[str, Any] = {
            "manifest_version": manifest.manifest_version,
            "release": manifest.release,
            "slot": manifest.slot,
            "bundle_sha256": verified.bundle_sha,
            "key": key,
        }
        if (
            verified.verdict is Verdict.SAME
            and self._installer.store.current_sha(manifest.slot) == verified.bundle_sha
        ):
            self.reporter.report(dep, "successful", noop=True, **common)
            return
        self.reporter.report(dep, "downloading", **common)
        try:
            files_dir = self._fetch(verified, common)
        except Superseded:
            self.reporter.report(dep, "failed", Reason.INTERRUPTED, detail="superseded", **common)
            return
        except UpdateError as exc:
            self.reporter.report(dep, "failed", exc.reason, detail=exc.message, **common)
            return
        if files_dir is None:  # stopping: the bitmap resumes it on the next start
            return
        self.reporter.report(dep, "installing", **common)
        try:
            result = self._installer.install(verified, files_dir)
        except UpdateError as exc:
            result = InstallResult(slot, "rejected", exc.reason, detail=exc.message)
        self._finish(dep, result, common, files_dir.parent)

    def _finish(
        self, dep: str, result: InstallResult, common: dict[str, Any], transfer_dir: Path
    ) -> None:
        if result.outcome == "interrupted":
            return
        status, default_reason = _OUTCOME.get(result.outcome, ("failed", Reason.INCONSISTENT))
        reason = result.reason or default_reason
        doc = self.reporter.report(
            dep, status, reason, outcome=result.outcome, detail=result.detail, **common
        )
        self.results.append(doc)
        TransferSession.remove(transfer_dir)

    def _fetch(self, verified: Verified, common: dict[str, Any]) -> Path | None:
        """From the manifest's HTTPS URL when it has one (and this device uses HTTPS), else MQTT."""
        manifest = verified.manifest
        started = self._clock.monotonic_s()
        if self._https is None or manifest.https is None:
            return self._transfer(verified, common, started)
        dep, last = manifest.deployment_id, [started]

        def keep_going() -> bool:
            with self._lock:
                if manifest.slot in self._deploys:
                    raise Superseded
            return not self._stop.is_set()

        def on_progress(progress: Progress) -> None:
            now = self._clock.monotonic_s()
            if now - last[0] >= self.settings.progress_interval_s:
                last[0] = now
                fields: dict[str, Any] = {"progress": dataclasses.asdict(progress)}
                self.reporter.report(dep, "downloading", source="https", **fields, **common)

        directory = self._transfer_root / manifest.chunk_index.sha256
        try:
            return self._https.fetch(
                manifest, directory, self.settings.deadline_s, keep_going, on_progress
            )
        except SourceError as exc:
            if exc.transient or not manifest.https.mqtt_fallback:
                raise
            # The bitmap is shared: MQTT resumes where HTTPS stopped, within the same deadline.
            log.warning("https_fallback_mqtt", reason=exc.reason.value, error=exc.message)
            fallback = f"{exc.reason.value}: {exc.message}"
            self.reporter.report(dep, "downloading", source="mqtt", fallback=fallback, **common)
            return self._transfer(verified, common, started)

    def _transfer(
        self, verified: Verified, common: dict[str, Any], started_s: float
    ) -> Path | None:
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
        self._active = (dep, session)
        # Subscribed only while transferring. SUBSCRIBE goes out before our first request on
        # the same connection, so the broker routes the answer to us.
        self._mark_stream(stream_topic)
        self._bus.subscribe(stream_topic, self._on_stream)
        last_progress = 0.0
        try:
            while not self._stop.is_set():
                with self._lock:
                    if manifest.slot in self._deploys:
                        raise Superseded
                now = self._clock.monotonic_s()
                tick = session.tick(now)
                if tick.done:
                    session.finish()
                    return session.files_dir
                if tick.request is not None:
                    try:
                        self._bus.publish(request_topic, tick.request.encode(), qos=1)
                    except AgentError as exc:  # link down: the stall timer asks again
                        log.debug("chunk_request_unsent", error=str(exc))
                if now - last_progress >= self.settings.progress_interval_s:
                    last_progress = now
                    progress = session.progress()
                    self.reporter.report(
                        dep, "downloading", progress=dataclasses.asdict(progress), **common
                    )
                self._frames.wait(0.05)
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
