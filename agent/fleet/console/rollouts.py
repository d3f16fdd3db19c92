"""Deployments started from the console: stages of signed bundles, followed live, halted.

The console holds no signing key, so it cannot re-sign one manifest per stage as
``edge-fleet rollout --keys`` does. A staged rollout here is a list of bundles the operator
made beforehand with ``edge-fleet bundle create --devices ...`` (canary first, then the rest;
manifest versions increasing), published one after the other. Each stage is what
``edge-fleet publish`` does: the manifest retained on the deploy topic, chunks served, and
only live answers that name this manifest's digest counted (``agent.fleet.track``).
A stage that ends with ``halt_on_failures`` failures, or with a device that did not answer
or finish, halts the rollout (the CLI's rule); so does the operator's halt.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.errors import AgentError
from agent.fleet.chunkserver import ChunkServer
from agent.fleet.deliver import check_not_older, fleet_members, manifest_key
from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import ServedBundle
from agent.fleet.track import NO_ANSWER, DeviceState, Tracker, outcome
from agent.log import get_logger
from agent.update.transfer.wire import Topics

log = get_logger(__name__)

_ids = itertools.count(1)


@dataclass
class Stage:
    name: str
    bundle: ServedBundle
    devices: list[str] | None  # None: the fleet's members, found when the stage starts
    status: str = "pending"  # pending | running | done | halted | not_started | error
    states: dict[str, DeviceState] = field(default_factory=dict)
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None

    def view(self) -> dict[str, Any]:
        manifest = self.bundle.manifest
        states = dict(sorted(self.states.items()))
        result = outcome(states, list(states))
        return {
            "name": self.name,
            "deployment_id": manifest.deployment_id,
            "manifest_version": manifest.manifest_version,
            "release": manifest.release,
            "slot": manifest.slot,
            "fleet": manifest.fleet,
            "devices": self.devices,
            "status": self.status,
            "error": self.error,
            "counts": {
                "successful": len(result.succeeded),
                "failed": len(result.failed),
                "no_answer": len(result.no_answer),
                "pending": len(result.pending),
            },
            "states": {
                d: {
                    "status": s.status,
                    "reason": s.reason if s.status != NO_ANSWER else NO_ANSWER,
                    "detail": s.detail,
                    "percent": round(100 * s.fraction, 1),
                }
                for d, s in states.items()
            },
        }


@dataclass
class Rollout:
    id: str
    stages: list[Stage]
    halt_on_failures: int
    created_at: float = field(default_factory=time.time)
    status: str = "running"  # running | successful | halted | error
    halt_reason: str = ""
    halt_rule_fired: bool = False
    halt_requested: threading.Event = field(default_factory=threading.Event)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "halt_on_failures": self.halt_on_failures,
            "halt_reason": self.halt_reason,
            "halt_rule_fired": self.halt_rule_fired,
            "created_at": self.created_at,
            "stages": [s.view() for s in self.stages],
        }


def halt_text(stage: str, states: dict[str, DeviceState], limit: int) -> str | None:
    """Why the halt rule fires after a stage (None: it does not)."""
    result = outcome(states, list(states))
    if not result.halts(limit):
        return None
    parts = [f"{len(result.failed)} failed (limit {limit})"]
    if result.no_answer:
        parts.append(f"{len(result.no_answer)} no answer ({', '.join(result.no_answer)})")
    if result.pending:
        parts.append(f"{len(result.pending)} unfinished ({', '.join(result.pending)})")
    failures = [
        f"{d}: {states[d].reason}" + (f" ({states[d].detail})" if states[d].detail else "")
        for d in result.failed
    ]
    text = f"halt rule fired at stage {stage}: " + ", ".join(parts)
    return text + ("; " + "; ".join(failures) if failures else "")


class Deployments:
    """The console's rollouts; each runs on its own thread, sharing the console's client."""

    def __init__(
        self,
        client: FleetClient,
        topics: Topics,
        *,
        answer_s: float = 30.0,
        stage_timeout_s: float = 3600.0,
        max_kept: int = 50,
    ) -> None:
        self._client = client
        self._topics = topics
        self._answer_s = answer_s
        self._stage_timeout_s = stage_timeout_s
        self._max_kept = max_kept
        self._lock = threading.Lock()
        self._rollouts: dict[str, Rollout] = {}
        self._threads: list[threading.Thread] = []

    def start(self, bundles: list[ServedBundle], halt_on_failures: int) -> Rollout:
        names = ["canary", "rest"] if len(bundles) == 2 else [f"stage {i + 1}" for i in range(9)]
        stages = [
            Stage(
                names[i] if len(bundles) > 1 else "all", b, list(b.manifest.devices or []) or None
            )
            for i, b in enumerate(bundles)
        ]
        rollout = Rollout(f"r{next(_ids)}-{bundles[-1].deployment_id}", stages, halt_on_failures)
        with self._lock:
            # One rollout per deploy topic: two would overwrite each other's retained manifest.
            running = {
                (s.bundle.manifest.fleet, s.bundle.manifest.slot)
                for r in self._rollouts.values()
                if r.status == "running"
                for s in r.stages
            }
            clash = running & {(b.manifest.fleet, b.manifest.slot) for b in bundles}
            if clash:
                fleet, slot = min(clash)
                raise AgentError(f"a rollout for fleet {fleet}, slot {slot} is still running")
            self._rollouts[rollout.id] = rollout
            for old in list(self._rollouts.values())[: -self._max_kept]:
                if old.status != "running":
                    del self._rollouts[old.id]
        thread = threading.Thread(target=self._run, args=(rollout,), name=f"rollout-{rollout.id}")
        thread.daemon = True
        self._threads.append(thread)
        thread.start()
        return rollout

    def halt(self, rollout_id: str) -> Rollout:
        with self._lock:
            rollout = self._rollouts.get(rollout_id)
        if rollout is None:
            raise AgentError(f"no rollout {rollout_id}")
        rollout.halt_requested.set()
        return rollout

    def get(self, rollout_id: str) -> Rollout | None:
        with self._lock:
            return self._rollouts.get(rollout_id)

    def views(self) -> list[dict[str, Any]]:
        with self._lock:
            rollouts = list(self._rollouts.values())
        return [r.view() for r in reversed(rollouts)]

    def close(self) -> None:
        with self._lock:
            rollouts = list(self._rollouts.values())
        for rollout in rollouts:
            rollout.halt_requested.set()
        for thread in self._threads:
            thread.join(5.0)

    def _run(self, rollout: Rollout) -> None:
        try:
            for stage in rollout.stages:
                if rollout.halt_requested.is_set():
                    rollout.status = "halted"
                    rollout.halt_reason = rollout.halt_reason or (
                        f"halted by the operator before stage {stage.name}"
                    )
                    break
                self._run_stage(rollout, stage)
                if stage.status == "error":
                    rollout.status, rollout.halt_reason = "error", stage.error
                    break
                if rollout.halt_requested.is_set():
                    stage.status = "halted"
                    rollout.status = "halted"
                    rollout.halt_reason = f"halted by the operator during stage {stage.name}"
                    break
                why = halt_text(stage.name, stage.states, rollout.halt_on_failures)
                if why is not None:
                    rollout.status, rollout.halt_reason, rollout.halt_rule_fired = (
                        "halted",
                        why,
                        True,
                    )
                    break
            else:
                rollout.status = "successful"
            if rollout.status != "successful":
                for later in rollout.stages:
                    if later.status == "pending":
                        later.status = "not_started"
        except Exception as exc:  # a rollout thread must end with a state the page can show
            log.exception("console_rollout_failed", rollout=rollout.id)
            rollout.status, rollout.halt_reason = "error", f"internal error: {exc}"
        log.info("console_rollout_done", rollout=rollout.id, status=rollout.status)

    def _run_stage(self, rollout: Rollout, stage: Stage) -> None:
        bundle = stage.bundle
        manifest = bundle.manifest
        topics = self._topics
        deploy_topic = topics.deploy(manifest.fleet, manifest.slot)
        stage.status, stage.started_at = "running", time.time()
        try:
            check_not_older(self._client, deploy_topic, manifest, force=False)
            if stage.devices is None:
                stage.devices = fleet_members(self._client, topics, manifest.fleet)
        except AgentError as exc:
            stage.status, stage.error = "error", str(exc)
            return
        tracker = Tracker(topics, bundle.deployment_id, manifest_key(bundle), stage.devices)
        tracker.attach(self._client)
        server_stop = threading.Event()
        server = ChunkServer(self._client, topics, [bundle], server_stop)
        server.start()
        try:
            self._client.publish_wait(deploy_topic, bundle.envelope_bytes, retain=True)
            log.info("console_manifest_published", deployment=bundle.deployment_id)
            follow(
                tracker,
                answer_s=self._answer_s,
                timeout_s=self._stage_timeout_s,
                stop=rollout.halt_requested,
                stage=stage,
            )
        except AgentError as exc:
            stage.status, stage.error = "error", str(exc)
            return
        finally:
            server_stop.set()
            server.join()
            self._client.unsubscribe(topics.model_update_filter(bundle.deployment_id))
            self._client.unsubscribe(topics.request_filter(bundle.deployment_id))
        stage.status, stage.finished_at = "done", time.time()


def follow(
    tracker: Tracker,
    *,
    answer_s: float,
    timeout_s: float,
    stop: threading.Event,
    stage: Stage,
    on_change: Callable[[], None] | None = None,
) -> None:
    """Copy the tracker's states into the stage until every device is terminal (or no
    answer), the stage times out, or ``stop`` is set."""
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        snap = tracker.answers()
        if elapsed >= min(answer_s, timeout_s):
            for state in snap.values():
                if not state.answered:
                    state.status = NO_ANSWER  # unfinished devices stay pending (halts too)
        stage.states = snap
        if on_change is not None:
            on_change()
        if snap and all(s.terminal for s in snap.values()):
            return
        if (not snap and elapsed >= answer_s) or elapsed >= timeout_s or stop.is_set():
            return
        if tracker.changed.wait(0.2):
            tracker.changed.clear()
