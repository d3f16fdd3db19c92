"""Orchestration: verify → stage → activate → trial → commit | roll back, and start-up recovery.

Every rejection before activation leaves the active model, the trusted state and
the state directory as they were (the floor is the one exception TUF requires:
it is persisted once a manifest validates, so a replay of an older one fails).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path

from agent.clock import Clock, SystemClock
from agent.errors import ActivationError, Reason, UpdateError, VerificationError
from agent.log import get_logger
from agent.timeguard import BUILD_FLOOR_WALL_S, read_last_known_good, record_good_time
from agent.update.engines.builder import ENGINES_DIR, EngineBuilder, engine_stage_step, needs_engine
from agent.update.store import faults
from agent.update.store.journal import (
    Journal,
    LoopBreakError,
    Phase,
    SlotJournal,
    pending_manifest,
)
from agent.update.store.lock import InstallLock, locked
from agent.update.store.models import FreeBytes, ModelStore, disk_free_bytes
from agent.update.store.outcome import Figures, InstallResult, space_guard
from agent.update.store.probe import HealthProbe, golden_on_staged
from agent.update.store.releasecheck import require_release_set
from agent.update.store.stagefiles import usable_source
from agent.update.store.truststore import TrustStore
from agent.update.trust.manifest import Manifest
from agent.update.trust.policy import DeviceFacts, Floor, Verdict, channel
from agent.update.trust.root import Root
from agent.update.trust.verify import Verified, verify_manifest

log = get_logger(__name__)


class Installer:
    def __init__(
        self,
        state_dir: Path,
        *,
        provisioned_root: Path,
        facts: DeviceFacts,
        probe: HealthProbe,
        slots: frozenset[str] | None = None,
        clock: Clock | None = None,
        free_bytes: FreeBytes = disk_free_bytes,
        fault: faults.FaultHook = faults.hit,
        max_model_bytes: int = 512 * 1024 * 1024,
        max_transitions: int = 28,
        engine_builders: Mapping[str, EngineBuilder] | None = None,
    ) -> None:
        self.state_dir = state_dir
        # Slots whose backend is TensorRT: an ONNX bundle gets its engine built while staging.
        self.engine_builders = dict(engine_builders or {})
        self.facts = facts
        self.probe = probe
        self.slots = slots
        self.clock = clock or SystemClock()
        self.fault = fault
        self.max_model_bytes = max_model_bytes
        self.store = ModelStore(state_dir, free_bytes=free_bytes, fault=fault)
        self.trust = TrustStore(state_dir, provisioned_root)
        self.journal = Journal(state_dir, max_transitions)
        # One installer at a time across threads and processes (daemon, CLI): issue 18.6.
        self.install_lock = InstallLock(state_dir)

    # --- trust ------------------------------------------------------------------

    @locked
    def apply_roots(self, chain: list[bytes], now_s: float | None = None) -> Root:
        """Walk root rotations N→N+1…; persist the result (floors reset if release keys changed)."""
        return self.trust.apply_chain(chain, self.clock.wall_s() if now_s is None else now_s)

    def trusted_floor_s(self) -> float:
        return max(BUILD_FLOOR_WALL_S, read_last_known_good(self.state_dir) or 0.0)

    @locked
    def verify(self, envelope_bytes: bytes, now_s: float | None = None) -> Verified:
        """All checks; on success persist the channel floor (never lowered) and good time."""
        now = self.clock.wall_s() if now_s is None else now_s  # fixed once per cycle
        root = self.trust.load_root()
        state = self.trust.load_state()
        verified = verify_manifest(
            envelope_bytes,
            root=root,
            state=state,
            facts=self.facts,
            slots=self.slots,
            now_s=now,
            trusted_floor_s=self.trusted_floor_s(),
            max_model_bytes=self.max_model_bytes,
        )
        manifest = verified.manifest
        chan = verified.channel
        if verified.verdict is Verdict.SAME:
            if verified.bundle_sha in state.failed.get(chan, ()):
                raise VerificationError(
                    Reason.HEALTH_FAILED,
                    "this bundle already failed its trial; publish a newer one",
                )
            return verified
        require_release_set(self.store, self.journal, verified)  # issue 18.9, before the floor
        old = state.floors.get(chan)
        floor = Floor(manifest.manifest_version, verified.bundle_sha, old.release if old else 0)
        with space_guard():  # atomic writes: a failure leaves the old files in place
            self.trust.ensure_initialised(root, state)
            self.trust.save_state(state.with_floor(chan, floor))
            record_good_time(self.state_dir, manifest.issued_at_s)
        return verified

    # --- install -------------------------------------------------------------------

    @locked
    def install(self, verified: Verified, files_dir: Path) -> InstallResult:
        """Stage, activate, trial, commit or roll back one verified manifest's files."""
        manifest = verified.manifest
        slot = manifest.slot
        if self.store.current_sha(slot) == verified.bundle_sha:
            return self._result("noop", None, manifest, verified.bundle_sha, "already active")
        # Verified before its download, installed after: another installer may have
        # committed a newer manifest in between (issue 18.6). Its floor wins.
        floor = self.trust.load_state().floors.get(verified.channel)
        if floor is not None and floor.manifest_version > manifest.manifest_version:
            raise VerificationError(
                Reason.ROLLBACK,
                f"manifest v{manifest.manifest_version} was overtaken by "
                f"v{floor.manifest_version} while it was fetched",
            )
        entry = self.journal.load(slot)
        if entry.phase not in (Phase.IDLE, Phase.COMMITTED, Phase.ROLLED_BACK):
            self.recover()  # finish the interrupted deployment before starting another
            entry = self.journal.load(slot)
        require_release_set(self.store, self.journal, verified)  # siblings may have moved on
        with space_guard():
            self.journal.save_pending(slot, verified.envelope_bytes)
            entry = self.journal.save(
                SlotJournal(slot=slot, last_result=entry.last_result),
                Phase.VERIFIED,
                deployment_id=manifest.deployment_id,
                manifest_version=manifest.manifest_version,
                release=manifest.release,
                bundle_sha=verified.bundle_sha,
                source_dir=str(files_dir),
            )
        self.fault("verified")
        return self._guarded(
            entry, manifest, functools.partial(self._stage_onwards, entry, manifest)
        )

    def _stage_onwards(self, entry: SlotJournal, manifest: Manifest) -> InstallResult:
        slot, sha = entry.slot, entry.bundle_sha
        info = {
            "manifest_version": manifest.manifest_version,
            "release": manifest.release,
            "deployment_id": manifest.deployment_id,
            "model_file": manifest.model_file,
            "backend": manifest.backend,
        }
        pending = self.journal.pending(slot) or b""
        builder = self.engine_builders.get(slot)
        derive = (
            engine_stage_step(builder, self.state_dir / ENGINES_DIR, manifest.model_file)
            if builder is not None and needs_engine(manifest.model_file)
            else None
        )
        try:
            self.store.stage(
                slot,
                sha,
                manifest.files,
                Path(entry.source_dir),
                info=info,
                manifest_bytes=pending,
                derive=derive,
            )
            entry = self.journal.save(entry, Phase.STAGED)
            self.store.verify_version(slot, sha, manifest.files)
            self._golden(slot, sha, manifest)
        except UpdateError as exc:
            self.store.discard(slot, sha)
            return self._reject(entry, exc)
        return self._activate(entry, manifest)

    def _golden(self, slot: str, sha: str, manifest: Manifest) -> None:
        """The manifest's signed golden cases on the staged model, before activation."""
        result = golden_on_staged(self.probe, self.store, slot, sha, manifest)
        if not result.ok:  # deterministic: a redelivery of this bundle is refused at once
            chan = channel(manifest.fleet, slot)
            self.trust.save_state(self.trust.load_state().with_failed(chan, sha))
            raise ActivationError(result.reason or Reason.GOLDEN_MISMATCH, result.detail)

    def _activate(self, entry: SlotJournal, manifest: Manifest) -> InstallResult:
        prev = (
            entry.prev_sha
            if entry.phase is Phase.ACTIVATING
            else self.store.current_sha(entry.slot)
        )
        if entry.phase is not Phase.ACTIVATING:
            entry = self.journal.save(entry, Phase.ACTIVATING, prev_sha=prev)
        self.store.activate(entry.slot, entry.bundle_sha, prev)
        return self._trial(entry, manifest)

    def _trial(self, entry: SlotJournal, manifest: Manifest) -> InstallResult:
        if entry.attempts >= manifest.health.max_attempts:
            return self._rollback(
                entry, manifest, f"{entry.attempts} trial attempts did not finish"
            )
        entry = self.journal.save(entry, Phase.TRIAL, attempts=entry.attempts + 1)
        self.fault("trial_start")
        model = self.store.current_model(entry.slot)
        if model is None:
            return self._rollback(entry, manifest, "current does not resolve after activation")
        info = self.store.version_info(entry.slot, entry.bundle_sha) or {}
        # The probe loads the engine built at staging, not the signed ONNX file.
        probed = (
            dataclasses.replace(manifest, backend="tensorrt")
            if info.get("engine_file")
            else manifest
        )
        result = self.probe.trial(entry.slot, model, probed)
        if result.interrupted:
            return self._result("interrupted", Reason.INTERRUPTED, manifest, entry.bundle_sha)
        if not result.ok:
            reason = result.reason or Reason.HEALTH_FAILED
            return self._rollback(entry, manifest, result.detail, reason, result.shadow)
        return self._commit(entry, manifest, result.detail, result.shadow)

    def _commit(
        self, entry: SlotJournal, manifest: Manifest, detail: str, shadow: Figures = None
    ) -> InstallResult:
        state = self.trust.load_state()
        chan = channel(manifest.fleet, manifest.slot)
        floor = state.floors.get(chan) or Floor(manifest.manifest_version, entry.bundle_sha)
        committed = Floor(floor.manifest_version, floor.manifest_sha256, manifest.release)
        self.trust.save_state(state.with_floor(chan, committed))
        self.journal.save(
            entry,
            Phase.COMMITTED,
            last_result={"outcome": "committed", "reason": None},
            detail=detail,
        )
        self.fault("commit_before_gc")
        self._finish(entry.slot)
        log.info("update_committed", slot=entry.slot, sha=entry.bundle_sha)
        result = self._result("committed", None, manifest, entry.bundle_sha, detail)
        return dataclasses.replace(result, shadow=shadow)

    def _rollback(
        self,
        entry: SlotJournal,
        manifest: Manifest,
        detail: str,
        reason: Reason = Reason.HEALTH_FAILED,
        shadow: Figures = None,
    ) -> InstallResult:
        if entry.phase is not Phase.ROLLING_BACK:
            entry = self.journal.save(entry, Phase.ROLLING_BACK, detail=detail)
        self.store.restore(entry.slot, entry.prev_sha)
        chan = channel(manifest.fleet, manifest.slot)
        self.trust.save_state(self.trust.load_state().with_failed(chan, entry.bundle_sha))
        self.journal.save(
            entry,
            Phase.ROLLED_BACK,
            last_result={"outcome": "rolled_back", "reason": reason.value},
        )
        self._finish(entry.slot)
        self.probe.restored(entry.slot, self.store.current_model(entry.slot))
        log.warning(
            "update_rolled_back", slot=entry.slot, sha=entry.bundle_sha, detail=entry.detail
        )
        result = self._result("rolled_back", reason, manifest, entry.bundle_sha, entry.detail)
        return dataclasses.replace(result, shadow=shadow)

    def _reject(self, entry: SlotJournal, exc: UpdateError) -> InstallResult:
        self.journal.save(
            entry,
            Phase.IDLE,
            last_result={"outcome": "rejected", "reason": exc.reason.value},
            detail=exc.message,
        )
        self.journal.clear_pending(entry.slot)
        raise exc

    def _finish(self, slot: str) -> None:
        self.store.gc(slot)
        self.journal.clear_pending(slot)

    def _guarded(
        self, entry: SlotJournal, manifest: Manifest, step: Callable[[], InstallResult]
    ) -> InstallResult:
        try:
            return step()
        except LoopBreakError:
            latest = self.journal.load(entry.slot)
            active = self.store.current_sha(entry.slot)
            self.journal.save(
                latest,
                Phase.INCONSISTENT,
                last_result={"outcome": "inconsistent", "reason": Reason.INCONSISTENT.value},
                detail=f"transition limit reached; active version {active or 'configured model'}",
            )
            log.error(  # noqa: TRY400 - a loop breaker, not a crash: no traceback wanted
                "update_inconsistent", slot=entry.slot, active=active
            )
            return self._result("inconsistent", Reason.INCONSISTENT, manifest, active or "")

    def _result(
        self,
        outcome: str,
        reason: Reason | None,
        manifest: Manifest,
        sha: str,
        detail: str = "",
    ) -> InstallResult:
        return InstallResult(manifest.slot, outcome, reason, manifest.manifest_version, sha, detail)

    # --- recovery and operator rollback -----------------------------------------------

    @locked
    def recover(self) -> list[InstallResult]:
        """Start-up: prune leftovers, then settle every slot whose journal is mid-deployment."""
        self.store.prune()
        self.journal.prune()
        results: list[InstallResult] = []
        for slot in self.journal.slots():
            entry = self.journal.load(slot)
            if entry.phase in (Phase.IDLE, Phase.ROLLED_BACK, Phase.INCONSISTENT):
                continue
            if entry.phase is Phase.COMMITTED:
                self._finish(slot)
                continue
            manifest = pending_manifest(self.journal, self.trust, slot)
            if manifest is None:
                results.append(self._abandon(entry))
                continue
            resume = functools.partial(self._resume, entry, manifest)
            results.append(self._guarded(entry, manifest, resume))
        return results

    def _resume(self, entry: SlotJournal, manifest: Manifest) -> InstallResult:
        log.info("update_resume", slot=entry.slot, phase=entry.phase.value)
        # Every restart mid-deployment counts as a transition: the livelock breaker's clock.
        entry = self.journal.save(entry, entry.phase)
        if entry.phase in (Phase.VERIFIED, Phase.STAGED):
            if not usable_source(entry.source_dir):  # gone, relative or a symlink
                return self._abandon(entry)
            try:
                return self._stage_onwards(entry, manifest)
            except UpdateError as exc:
                return self._result("rejected", exc.reason, manifest, entry.bundle_sha)
        if entry.phase is Phase.ACTIVATING:
            return self._resume_activation(entry, manifest)
        if entry.phase is Phase.TRIAL:
            return self._trial(entry, manifest)
        return self._rollback(entry, manifest, entry.detail or "interrupted rollback")

    def _resume_activation(self, entry: SlotJournal, manifest: Manifest) -> InstallResult:
        """Make ``current`` the new version if its dir is complete, else the previous one."""
        if self.store.version_info(entry.slot, entry.bundle_sha) is None:
            self.store.restore(entry.slot, entry.prev_sha)
            return self._abandon(entry)
        return self._activate(entry, manifest)

    def _abandon(self, entry: SlotJournal) -> InstallResult:
        self.journal.save(
            entry, Phase.IDLE, last_result={"outcome": "failed", "reason": Reason.INTERRUPTED.value}
        )
        self.store.gc(entry.slot)
        self.journal.clear_pending(entry.slot)
        return InstallResult(entry.slot, "interrupted", Reason.INTERRUPTED, entry.manifest_version)

    @locked
    def operator_rollback(self, slot: str) -> InstallResult:
        """``update rollback``: make ``previous`` current (no trial: it was committed before)."""
        entry = self.journal.load(slot)
        active = self.store.swap(slot)
        self.journal.save(
            SlotJournal(slot=slot, bundle_sha=active),
            Phase.ROLLED_BACK,
            last_result={"outcome": "rolled_back", "reason": None},
            detail=f"operator rollback from {entry.bundle_sha or 'unknown'}",
        )
        self.probe.restored(slot, self.store.current_model(slot))
        info = self.store.version_info(slot, active) or {}
        return InstallResult(
            slot, "rolled_back", None, int(info.get("manifest_version", 0)), active
        )
