"""Pick the checks a config implies, run them concurrently, never let one raise."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, LoadedConfig
from agent.diag import broker, camera, host, inference, system, updates
from agent.diag.report import CheckResult, DiagReport, fail, group_of
from agent.errors import ConfigError
from agent.log import get_logger

log = get_logger(__name__)

CHECK_ORDER = (
    "config",
    "clock",
    "disk",
    "camera",
    "model",
    "broker",
    "tls",
    "trust",
    "update",
    "systemd",
    "accelerator",
    "thermal",
)
# Checks that need nothing from a valid config (the defaults describe the host well enough).
WITHOUT_CONFIG = frozenset({"config", "clock", "disk", "systemd", "accelerator", "thermal"})
MAX_WORKERS = 4

Check = Callable[[], CheckResult]


@dataclass(frozen=True)
class DiagOptions:
    camera_window_s: float = 2.0
    network_timeout_s: float = 5.0
    root: Path = Path("/")  # where /sys, /etc, /dev are read (tests lay out boards here)
    wall_clock: Callable[[], float] = time.time
    runner: system.CommandRunner = system.run_command
    extra: dict[str, Any] = field(default_factory=dict)


def plan(
    cfg: AgentConfig,
    *,
    have_config: bool,
    error: ConfigError | None,
    source: str,
    live: dict[str, Any] | None,
    opts: DiagOptions,
) -> list[tuple[str, Check]]:
    """Every applicable check as (name, thunk), in report order."""
    state_dir = Path(cfg.storage.state_dir)
    checks: list[tuple[str, Check]] = [
        ("config", lambda: system.check_config(cfg if have_config else None, error, source)),
        ("clock", lambda: system.check_clock(state_dir, opts.wall_clock(), opts.runner)),
        ("disk", lambda: system.check_disk(state_dir, cfg.storage.min_free_mb)),
    ]
    for cam in cfg.cameras:
        cam_check: Check = (
            partial(camera.check_camera_live, cam, live)
            if live is not None
            else partial(camera.check_camera_local, cam, cfg.board, opts.camera_window_s)
        )
        checks.append((f"camera:{cam.name}", cam_check))
    for model in cfg.models:
        model_check: Check = (
            partial(inference.check_model_live, model, live)
            if live is not None
            else partial(inference.check_model_local, cfg, model)
        )
        checks.append((f"model:{model.slot}", model_check))
    if live is not None:
        checks.append(
            (
                "broker",
                lambda: broker.check_broker_live(
                    cfg.mqtt, live, cfg.device.id, opts.network_timeout_s
                ),
            )
        )
    else:
        checks.append(
            ("broker", lambda: broker.check_broker(cfg.mqtt, cfg.device.id, opts.network_timeout_s))
        )
    checks += [
        ("tls", lambda: broker.check_tls(cfg.mqtt, timeout_s=opts.network_timeout_s)),
        ("trust", lambda: updates.check_trust(Path(cfg.trust.root), opts.wall_clock())),
        ("update", lambda: updates.check_update(state_dir, Path(cfg.trust.root))),
        ("systemd", lambda: host.check_systemd(opts.root, opts.runner)),
        ("accelerator", lambda: host.check_accelerator(cfg.board, opts.root)),
        ("thermal", lambda: host.check_thermal(cfg.board, opts.root)),
    ]
    if not have_config:
        checks = [(n, c) for n, c in checks if n in WITHOUT_CONFIG]
    return checks


def matches(check_name: str, wanted: str) -> bool:
    """``camera`` selects every ``camera:<name>``; ``camera:door`` only that one."""
    return check_name == wanted or (":" not in wanted and group_of(check_name) == wanted)


def select(
    planned: list[tuple[str, Check]], names: list[str] | None
) -> tuple[list[tuple[str, Check]], list[str]]:
    """(chosen checks in report order, requested names that matched nothing)."""
    if not names:
        return planned, []
    chosen = [(n, c) for n, c in planned if any(matches(n, w) for w in names)]
    unknown = [w for w in names if not any(matches(n, w) for n, _ in planned)]
    return chosen, unknown


def guarded(name: str, check: Check) -> CheckResult:
    """Run one check; a bug or surprise becomes a ``fail``, never an exception."""
    try:
        return check()
    except Exception as exc:
        log.warning("diag_check_crashed", check=name, error=repr(exc))
        return fail(
            name,
            f"check crashed: {type(exc).__name__}: {exc}",
            "report this with the bundle (edge-agent diag --bundle DIR)",
        )


def unknown_result(name: str, planned: list[tuple[str, Check]]) -> CheckResult:
    groups = sorted({group_of(n) for n, _ in planned} | {n for n, _ in planned})
    return fail(
        name,
        "no such check for this configuration",
        f"choose from: {', '.join(groups)}",
    )


def run_checks(
    loaded: LoadedConfig | None,
    names: list[str] | None = None,
    live: dict[str, Any] | None = None,
    *,
    config_error: ConfigError | None = None,
    options: DiagOptions | None = None,
) -> DiagReport:
    """Run the selected checks (all when ``names`` is empty) and collect the report.

    ``live`` is the running daemon's status reply: camera, model and broker checks
    then read it instead of opening the camera, loading the model or connecting.
    """
    opts = options or DiagOptions()
    cfg = loaded.config if loaded is not None else AgentConfig()
    source = str(loaded.path) if loaded is not None and loaded.path else "defaults"
    planned = plan(
        cfg,
        have_config=loaded is not None,
        error=config_error,
        source=source,
        live=live,
        opts=opts,
    )
    chosen, unknown = select(planned, names)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="diag") as pool:
        futures = [pool.submit(guarded, name, check) for name, check in chosen]
        results = [f.result() for f in futures]
    results += [unknown_result(name, planned) for name in unknown]
    report = DiagReport(checks=tuple(results), source="daemon" if live is not None else "local")
    log.info(
        "diag_done",
        code=report.code,
        checks=len(results),
        elapsed_s=round(time.monotonic() - started, 2),
    )
    return report
