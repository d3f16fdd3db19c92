"""Device side of MQTT model updates: trust root, deployments, heartbeats, chunk pulls.

One thread (``update-service``) does all the work; MQTT callbacks only store the
newest message per topic (latest wins, so nothing queues without bound) and wake
it. A deployment is verified by the update core before anything else (signature,
expiry, targeting, compatibility, version floor), so a replayed or foreign
manifest never costs a byte of download. Every phase is reported on
``op/model_update/<deployment_id>``. The bytes come from the manifest's HTTPS source
or from the MQTT chunk pull (``pull.StreamPull``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
from pathlib import Path
from typing import Any

from agent.clock import Clock, SystemClock
from agent.errors import Reason, SourceError, UpdateError
from agent.log import get_logger
from agent.update.store.installer import Installer
from agent.update.store.outcome import InstallResult
from agent.update.transfer import budget
from agent.update.transfer.freshness import FreshnessWatch
from agent.update.transfer.pull import StreamPull
from agent.update.transfer.report import OpReporter
from agent.update.transfer.rootchain import RootChain
from agent.update.transfer.screen import UnverifiedInput, authentic_manifest, signed_manifest
from agent.update.transfer.session import Progress, TransferSession
from agent.update.transfer.settings import Bus, ServiceSettings, Superseded
from agent.update.transfer.source import BundleFetcher
from agent.update.transfer.wire import Topics
from agent.update.trust.policy import Verdict
from agent.update.trust.verify import Verified

log = get_logger(__name__)
_OUTCOME = {
    "committed": ("successful", None),
    "noop": ("successful", None),
    "rolled_back": ("failed", Reason.HEALTH_FAILED),
    "inconsistent": ("failed", Reason.INCONSISTENT),
    "rejected": ("failed", None),
}


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
        free_bytes: budget.FreeBytes = budget.disk_free_bytes,
    ) -> None:
        self._bus = bus
        self._https = https
        self._free_bytes = free_bytes
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
        self.unverified = UnverifiedInput(
            bus,
            topics,
            settings.device_id,
            self._clock,
            alarm_interval_s=settings.unverified_alarm_interval_s,
        )
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.pull = StreamPull(
            bus,
            topics,
            settings,
            transfer_root=self._transfer_root,
            reporter=self.reporter,
            stop=stop,
            clock=self._clock,
        )
        self._deploys: dict[str, bytes] = {}
        self._held_slots: set[str] = set()  # deployments held by a stale heartbeat
        self.roots = RootChain(installer.trust.load_root, installer.apply_roots, self.unverified)
        self._screened: tuple[bytes, bool] | None = None  # last pending manifest checked
        self.results: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        fleet = self.settings.fleet
        self._bus.subscribe(self._topics.trust_root(fleet), self._on_root)
        # Every root version on its own retained topic: the chain to walk (rootchain.py).
        self._bus.subscribe(self._topics.trust_root_versions(fleet), self._on_root)
        self._bus.subscribe(self._topics.deploy_filter(fleet), self._on_deploy)
        self._bus.subscribe(self._topics.heartbeat(fleet), self.freshness.on_message)
        self.pull.drop_stale_streams()
        self._thread = threading.Thread(target=self._run, name="update-service", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        self._wake.set()
        self.pull.wake()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # --- MQTT callbacks (network thread: store and wake only) --------------------------

    def _on_root(self, topic: str, payload: bytes) -> None:
        if self.roots.on_message(topic, payload):
            self._wake.set()

    def _on_deploy(self, topic: str, payload: bytes) -> None:
        if not payload:  # a cleared retained deployment
            return
        slot = topic.rsplit("/", 1)[-1]
        with self._lock:
            self._deploys[slot] = payload
        self._wake.set()
        self.pull.wake()  # a transfer in progress checks at once whether this supersedes it

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
        self.roots.apply()
        self.freshness.check()
        if self._held_slots and self.freshness.stale() is None:
            held, self._held_slots = self._held_slots, set()
            for slot in sorted(held):  # fresh again: the retained manifest comes once more
                self._refetch(slot)
        while not self._stop.is_set():
            with self._lock:
                if not self._deploys:
                    return
                slot = next(iter(self._deploys))
                envelope = self._deploys.pop(slot)
            self._deploy(slot, envelope)

    def _superseded(self, slot: str, current: Verified) -> bool:
        """A signed, newer manifest for ``slot`` is waiting; unverifiable ones are dropped here.

        Checked before superseding, so a junk message on ``deploy/<slot>`` (or a replay of
        an older signed manifest) cannot abort a signed transfer in progress.
        """
        with self._lock:
            pending = self._deploys.get(slot)
        if pending is None:
            return False
        if pending == current.envelope_bytes:
            self._drop_pending(slot, pending)  # the same retained manifest, redelivered
            return False
        if self._screened is not None and self._screened[0] is pending:
            return self._screened[1]  # checked on an earlier tick: signatures cost a verify
        try:
            offered = authentic_manifest(pending, self._installer.trust.load_root())
        except UpdateError as exc:
            self._drop_pending(slot, pending)
            source = self._topics.deploy(self.settings.fleet, slot)
            self.unverified.record(source, exc.reason, exc.message)
            return False
        # Signed but not newer (a replay): handled and reported once this transfer is done.
        newer = offered.manifest_version > current.manifest.manifest_version
        self._screened = (pending, newer)
        return newer

    def _drop_pending(self, slot: str, envelope: bytes) -> None:
        with self._lock:
            if self._deploys.get(slot) is envelope:
                del self._deploys[slot]

    @property
    def corrupt_frames(self) -> int:
        return self.pull.corrupt_frames

    def _refetch(self, slot: str) -> None:
        # A fresh SUBSCRIBE makes the broker deliver the retained manifest again.
        self._bus.subscribe(self._topics.deploy(self.settings.fleet, slot), self._on_deploy)

    def _deploy(self, slot: str, envelope: bytes) -> None:
        key = hashlib.sha256(envelope).hexdigest()
        verified = self._verify(slot, envelope, key)
        if verified is None:
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
        if self._held_by_stale_heartbeat(manifest.slot, dep, common):
            return
        files_dir = self._download(verified, common)
        if files_dir is None:  # failed (reported), or stopping: the bitmap resumes it later
            return
        self.reporter.report(dep, "installing", **common)
        try:
            result = self._installer.install(verified, files_dir)
        except UpdateError as exc:
            result = InstallResult(slot, "rejected", exc.reason, detail=exc.message)
        self._finish(dep, result, common, files_dir.parent)

    def _held_by_stale_heartbeat(self, slot: str, dep: str, common: dict[str, Any]) -> bool:
        """Fleet policy ``block_on_stale_heartbeat``: no new deployment while it is stale.

        Reported ``failed``/``expired``; the slot is asked for again (re-subscribe) once a
        fresh heartbeat arrives, so the deployment goes ahead then.
        """
        if not self.settings.block_on_stale_heartbeat:
            return False
        why = self.freshness.stale()
        if why is None:
            return False
        self._held_slots.add(slot)
        log.warning("deployment_held", slot=slot, deployment=dep, why=why)
        detail = f"{why}; block_on_stale_heartbeat holds new deployments"
        self.reporter.report(dep, "failed", Reason.EXPIRED, detail=detail, **common)
        return True

    def _verify(self, slot: str, envelope: bytes, key: str) -> Verified | None:
        """The verified manifest, or None once the rejection is reported (or counted)."""
        try:
            return self._installer.verify(envelope)
        except UpdateError as exc:
            signed = signed_manifest(envelope, self._installer.trust.load_root())
            if signed is None:
                # Not authentic: no op state (its claimed id may be a real deployment's).
                source = self._topics.deploy(self.settings.fleet, slot)
                self.unverified.record(source, exc.reason, exc.message)
                return None
            log.warning("deployment_rejected", slot=slot, reason=exc.reason.value)
            doc = self.reporter.report(
                signed.deployment_id, "failed", exc.reason, detail=exc.message, key=key
            )
            self.results.append(doc)
            return None

    def _download(self, verified: Verified, common: dict[str, Any]) -> Path | None:
        """The bundle's files, or None: failed (reported) or stopping."""
        manifest = verified.manifest
        dep = manifest.deployment_id
        transfer_dir = self._transfer_root / manifest.chunk_index.sha256
        try:
            # Before the first chunk: the signed total must fit (other partials are dropped).
            budget.reserve(self._transfer_root, manifest, self._free_bytes)
            self.reporter.report(dep, "downloading", **common)
            try:
                return self._fetch(verified, common)
            except OSError as exc:  # a disk error in the HTTPS source's writes
                raise budget.translate_os_error(exc, "writing the transfer") from exc
        except Superseded:
            # Kept: the next transfer's reserve() drops it unless it shares these files.
            self.reporter.report(dep, "failed", Reason.INTERRUPTED, detail="superseded", **common)
        except UpdateError as exc:
            # A terminal state frees the partial files first (the op state can then be saved).
            TransferSession.remove(transfer_dir)
            self.reporter.report(dep, "failed", exc.reason, detail=exc.message, **common)
        return None

    def _finish(
        self, dep: str, result: InstallResult, common: dict[str, Any], transfer_dir: Path
    ) -> None:
        if result.outcome == "interrupted":
            return
        TransferSession.remove(transfer_dir)  # first: a full disk gets its space back
        status, default_reason = _OUTCOME.get(result.outcome, ("failed", Reason.INCONSISTENT))
        reason = result.reason or default_reason
        extra = {"shadow": result.shadow} if result.shadow else {}  # shadow-trial figures
        doc = self.reporter.report(
            dep, status, reason, outcome=result.outcome, detail=result.detail, **common, **extra
        )
        self.results.append(doc)

    def _fetch(self, verified: Verified, common: dict[str, Any]) -> Path | None:
        """From the manifest's HTTPS URL when it has one (and this device uses HTTPS), else MQTT."""
        manifest = verified.manifest
        started = self._clock.monotonic_s()
        superseded = functools.partial(self._superseded, manifest.slot, verified)
        if self._https is None or manifest.https is None:
            return self.pull.pull(verified, common, started, superseded)
        dep, last = manifest.deployment_id, [started]

        def keep_going() -> bool:
            if superseded():
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
            return self.pull.pull(verified, common, started, superseded)
