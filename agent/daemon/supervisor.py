"""The daemon: ordered start, one stop Event, reversed stop with timeouts.

Start order: state dir, outbox, link, publisher, pipeline, commands, control socket;
then READY=1. The main thread runs the telemetry loop (stats, health, alarms) and pings
the systemd watchdog only while the pipeline reports progress. SIGTERM/SIGINT only set
the stop event; shutdown walks the started stages backwards.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__
from agent.clock import Clock, SystemClock
from agent.config import LoadedConfig
from agent.config.desired import reverted
from agent.daemon import extras, instance
from agent.daemon.config_trial import ConfigTrial, TrialWatch
from agent.daemon.control import ControlServer
from agent.daemon.notify import notify, watchdog_interval_s
from agent.daemon.ops import build_command_handlers, build_control_handlers
from agent.daemon.pipelines import (
    PipelineFactory,
    PipelineLike,
    default_pipeline_factory,
    installed_model_paths,
)
from agent.daemon.reporting import status_document, wanted_alarms
from agent.errors import InstanceError
from agent.events.types import DetectionEvent, EventSink
from agent.log import get_logger
from agent.update.engines.refresh import EngineRefresher, start_engine_refresh
from agent.update.store.installer import Installer
from agent.update.transfer.service import UpdateService
from agent.update.transfer.wiring import live_installer, start_update_service
from agent.uplink.alarms import Alarms
from agent.uplink.classes import MsgClass, OutMessage
from agent.uplink.commands import CommandDispatcher
from agent.uplink.drift import DriftMonitor
from agent.uplink.health import (
    clock_component,
    health_document,
    same_health,
    storage_component,
    uplink_component,
)
from agent.uplink.link import Link
from agent.uplink.outbox import Outbox
from agent.uplink.procinfo import CpuMeter, process_info
from agent.uplink.publisher import Publisher
from agent.uplink.stats import stats_document
from agent.uplink.topics import Topics

log = get_logger(__name__)

RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: non-zero, so systemd's Restart=on-failure restarts us
TICK_S = 0.25
PROGRESS_STALE_S = 30.0


class Supervisor:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        pipeline_factory: PipelineFactory | None = None,
        clock: Clock | None = None,
        config_trial: int | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.clock = clock or SystemClock()
        self.stop_event = threading.Event()
        self.exit_code = 0
        self.state_dir = Path(self.config.storage.state_dir)
        self.topics = Topics(
            self.config.mqtt.topic_root, self.config.device.id, self.config.device.fleet
        )
        self._factory = pipeline_factory or default_pipeline_factory
        self._stops: list[tuple[str, Callable[[], None]]] = []
        self.started_wall_s = self.clock.wall_s()
        self.started_mono_s = self.clock.monotonic_s()
        self.outbox: Outbox | None = None
        self.link: Link | None = None
        self.pipeline: PipelineLike | None = None
        self.alarms: Alarms | None = None
        self.commands: CommandDispatcher | None = None
        self.engines: EngineRefresher | None = None
        self.installer: Installer | None = None
        self.updates: UpdateService | None = None
        self._cpu = CpuMeter()
        tel = self.config.telemetry
        self.drift = DriftMonitor(
            tel.drift_window_events, tel.drift_hist_limit, tel.drift_rate_limit
        )
        self._drift: dict[str, dict[str, Any]] = {}
        self._last_health: dict[str, Any] | None = None
        # ``models`` as last sent in the retained birth; re-sent when the pipeline's differ.
        self._birth_models: dict[str, Any] | None = None
        self._planned: dict[str, Any] | None = None
        # A remote config on trial in this run (version), and the last one reverted.
        self._trial_version = config_trial
        self.config_trial: TrialWatch | None = None
        self._reverted: dict[str, Any] | None = None

    # --- start ----------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # One daemon per state dir and per socket: refuse before touching anything else.
        held = instance.acquire(self.state_dir)
        self._stops.append(("instance", held.release))
        instance.check_socket_path(self.socket_path, self.protected_dirs())
        self._reverted = reverted(self.state_dir)
        if self._trial_version is not None:
            trial = ConfigTrial(
                self._trial_version,
                self.clock.monotonic_s(),
                cfg.control.config_trial_s,
                cfg.control.config_healthy_s,
            )
            self.config_trial = TrialWatch(self.state_dir, trial, self.request_restart)
            log.info("desired_config_trial", version=self._trial_version)

        self.outbox = Outbox(self.state_dir, cfg.outbox, self.topics.detection_counts, self.clock)
        self.outbox.start()
        self._stops.append(("outbox", self.outbox.stop))

        self.link = Link(
            cfg.mqtt, self.topics, self.state_dir, self.stop_event, birth_extra=self._birth_extra
        )
        self.alarms = Alarms(self.topics, self._emit_alarm, self.state_dir, self.clock.wall_s)
        self.commands = CommandDispatcher(self.topics, self._emit_op, self.state_dir)
        for op, handler in build_command_handlers(self).items():
            self.commands.register(op, handler)
        self.link.subscribe(self.topics.cmd_filter, self.commands.on_message)
        if (ha_stop := extras.start_homeassistant(self)) is not None:
            self._stops.append(("homeassistant", ha_stop))
        self.link.start()
        self._stops.append(("link", self.link.stop))

        publisher = Publisher(self.outbox, self.link)
        publisher.start()
        self._stops.append(("publisher", publisher.stop))

        sink, taps_stop = extras.start_event_taps(self, self._sink())
        if taps_stop is not None:  # snapshots and the live view
            self._stops.append(("event_taps", taps_stop))
        self.pipeline = self._factory(cfg, sink, self.state_dir, self.stop_event)
        self.pipeline.start()
        self._stops.append(("pipeline", self.pipeline.stop))

        # Engines another TensorRT/GPU built: rebuilt in the background; the engine cache is
        # pruned first, before the update service can stage anything.
        self.engines = start_engine_refresh(cfg, self.state_dir, self.pipeline, self.stop_event)
        if self.engines is not None:
            self._stops.append(("engines", self.engines.join))

        # Model updates over MQTT: stopped before the pipeline (stops run in reverse).
        # One installer for MQTT deployments and local update commands (control socket).
        self.installer = live_installer(cfg, self.pipeline, self.stop_event)
        updates = start_update_service(
            cfg, self.link, self.pipeline, self.stop_event, installer=self.installer
        )
        if updates is not None:
            self.updates = updates
            self._stops.append(("updates", updates.join))

        self.commands.start(self.stop_event)
        self._stops.append(("commands", self._join_commands))

        control = ControlServer(
            self.socket_path, build_control_handlers(self), self.stop_event, self.protected_dirs()
        )
        control.start()
        self._stops.append(("control", control.stop))
        notify("READY=1")
        log.info("daemon_started", pid=os.getpid(), version=__version__, device=cfg.device.id)

    @property
    def socket_path(self) -> Path:
        return Path(self.config.control.socket_path)

    def protected_dirs(self) -> list[Path]:
        """Where the control socket may never be created (other files are never replaced)."""
        return [self.state_dir]

    def _sink(self) -> EventSink:
        assert self.outbox is not None
        to_outbox = self.outbox.sink(self.topics.detection)

        def sink(event: DetectionEvent) -> None:
            self.drift.observe(event)
            to_outbox(event)

        return sink

    def _join_commands(self) -> None:
        if self.commands is not None:
            self.commands.join(5.0)

    # --- run / stop -----------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: object) -> None:
            log.info("signal_received", signal=signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> int:
        """Start, loop until stopped, stop; the process exit code."""
        try:
            self.start()
            self._loop()
        except InstanceError as exc:
            # Another daemon owns this state dir or socket: say who, touch nothing of theirs.
            log.error("daemon_refused", error=exc.message, **exc.data)  # noqa: TRY400
            self.exit_code = exc.exit_code
            raise
        finally:
            self.shutdown()
        return self.exit_code

    def request_restart(self) -> None:
        log.info("daemon_restart_requested")
        self.exit_code = RESTART_EXIT_CODE
        self.stop_event.set()

    def _loop(self) -> None:
        tel = self.config.telemetry
        next_stats = self.clock.monotonic_s() + min(tel.stats_interval_s, 5.0)
        next_health = self.clock.monotonic_s()
        watchdog = watchdog_interval_s()
        next_ping = self.clock.monotonic_s()
        while not self.stop_event.wait(TICK_S):
            now = self.clock.monotonic_s()
            if now >= next_health:
                next_health = now + tel.health_interval_s
                self.publish_health()
            self.refresh_birth_models()
            if self.config_trial is not None and self.config_trial.trial is not None:
                self.check_config_trial(now)
            if now >= next_stats:
                next_stats = now + tel.stats_interval_s
                self.publish_stats()
            if watchdog is not None and now >= next_ping and self.making_progress():
                next_ping = now + watchdog
                notify("WATCHDOG=1")

    def check_config_trial(self, now: float) -> None:
        assert self.config_trial is not None
        connected = self.link is not None and self.link.connected
        status = health_document(self.health_components(), self.clock.wall_s())["status"]
        self.config_trial.tick(now, self.clock.wall_s(), connected, str(status))

    def making_progress(self) -> bool:
        if self.pipeline is None:
            return False
        stale_after = max(PROGRESS_STALE_S, 2 * (watchdog_interval_s() or 0.0))
        return time.monotonic() - self.pipeline.last_progress_mono_s() < stale_after

    def shutdown(self) -> None:
        self.stop_event.set()
        notify("STOPPING=1")
        for name, stop in reversed(self._stops):
            begun = time.monotonic()
            try:
                stop()
            except Exception:
                log.exception("stage_stop_failed", stage=name)
            log.info("stage_stopped", stage=name, took_s=round(time.monotonic() - begun, 2))
        self._stops.clear()
        log.info("daemon_stopped", exit_code=self.exit_code)

    # --- telemetry ------------------------------------------------------------------

    def _emit_alarm(self, topic: str, payload: bytes) -> None:
        assert self.outbox is not None
        self.outbox.put(OutMessage(topic, payload, 1, retain=True, cls=MsgClass.ALARM))

    def _emit_op(self, topic: str, doc: dict[str, Any]) -> None:
        assert self.outbox is not None
        self.outbox.put_json(topic, doc, MsgClass.ALARM, qos=1, retain=True)

    def _birth_extra(self) -> dict[str, Any]:
        models = self._birth_model_map()
        self._birth_models = models
        return {
            "agent_version": __version__,
            "models": models,
            "boot_id": boot_id(),
            "profile": self.config.device.profile,  # board profile: the console's fleet table
            # Version of the operator's desired config in effect (None: file only).
            "config_version": self.loaded.desired_version,
        }

    def _birth_model_map(self) -> dict[str, Any]:
        """Loaded models' details; slots not loaded yet (pipeline starting) show their file."""
        if self._planned is None:  # read the store once, not on every telemetry tick
            self._planned = self._planned_models()
        models = {slot: dict(info) for slot, info in self._planned.items()}
        if self.pipeline is not None:
            models.update(self.pipeline.model_info())
        return models

    def _planned_models(self) -> dict[str, Any]:
        """Before the pipeline is up: the model file each slot will load (store, else config)."""
        installed = installed_model_paths(self.config, self.state_dir)
        return {
            m.slot: {"path": str(installed.get(m.slot, m.path)), "backend": m.backend}
            for m in self.config.models
        }

    def refresh_birth_models(self) -> None:
        """Re-publish the retained birth once ``models`` changed (pipeline up, model updated).

        The link connects before the pipeline exists, so the first birth has planned files only.
        """
        if self.link is None or self.pipeline is None or self._birth_models is None:
            return
        if self._birth_model_map() != self._birth_models:
            self.link.refresh_birth()  # _birth_extra records what went out

    def health_components(self) -> dict[str, dict[str, str]]:
        comps: dict[str, dict[str, str]] = {}
        if self.pipeline is not None:
            comps.update(self.pipeline.health_snapshot())
        if self.engines is not None:
            comps.update(self.engines.health())  # a slot whose engine is being rebuilt
        if self.link is not None:
            comps["uplink"] = uplink_component(self.link.connected, self.link.url)
        comps["storage"] = storage_component(self.state_dir, self.config.storage.min_free_mb)
        comps["clock"] = clock_component(self.clock.wall_s(), self.state_dir)
        return comps

    def publish_health(self) -> None:
        doc = health_document(self.health_components(), self.clock.wall_s())
        self._drift = self.drift.evaluate()
        if self.alarms is not None:
            wanted = wanted_alarms(doc, self._drift)
            if self._reverted is not None:
                wanted["config_reverted"] = ("major", str(self._reverted.get("reason", "")))
            self.alarms.reconcile(wanted)
        if same_health(self._last_health, doc) or self.outbox is None:
            return
        self._last_health = doc
        self.outbox.put_json(self.topics.health, doc, MsgClass.ALARM, qos=1, retain=True)

    def stats_doc(self) -> dict[str, Any]:
        board = self.config.board
        doc = stats_document(
            ts=self.clock.wall_s(),
            uptime_s=self.clock.monotonic_s() - self.started_mono_s,
            pipeline=self.pipeline.stats_snapshot() if self.pipeline else {},
            process=process_info(self._cpu, board.thermal_zone_paths, board.throttle_path),
            outbox=self.outbox.snapshot() if self.outbox else {},
            link=self.link_info(),
            drift=self._drift,
        )
        if self.updates is not None:  # junk on the update topics, counted (issue 18)
            doc["update"] = {"unverified_input": self.updates.unverified.snapshot()}
        return doc

    def publish_stats(self) -> None:
        if self.outbox is not None:
            self.outbox.put_json(self.topics.stats, self.stats_doc(), MsgClass.STATS, qos=0)

    def link_info(self) -> dict[str, Any]:
        if self.link is None:
            return {"connected": False, "url": self.config.mqtt.url}
        return {
            "connected": self.link.connected,
            "url": self.link.url,
            "session": self.link.session,
            "attempts": self.link.attempts,
        }

    def status(self) -> dict[str, Any]:
        """The control socket's ``status`` reply."""
        doc = status_document(self)
        doc["config_trial"] = self.config_trial.status() if self.config_trial else None
        doc["config_reverted"] = self._reverted
        return doc


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""
