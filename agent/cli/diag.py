"""``edge-agent diag [CHECK...] [--json] [--bundle DIR]``: field checks; exit 0 / 1 warn / 2 fail.

When the daemon answers on its control socket it runs the checks itself (it owns
the camera); otherwise this process runs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent import log
from agent.cli.common import config_options, configure_logging_from, load_from_args, print_json
from agent.config import LoadedConfig
from agent.daemon.control import request
from agent.diag.bundle import write_bundle
from agent.diag.render import render_table, summary_line
from agent.diag.report import DiagReport
from agent.diag.runner import DiagOptions, run_checks
from agent.errors import AgentError, ConfigError

logger = log.get_logger(__name__)
# Camera windows and model loads run on the daemon's side; give it time to answer.
DAEMON_DIAG_TIMEOUT_S = 90.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "diag",
        parents=[config_options()],
        help="field checks; exit 0 ok, 1 warning, 2 failure",
        description=(
            "Check config, clock, disk, cameras, models, broker, TLS, trust, updates, systemd, "
            "accelerator and temperature. Asks the running daemon when there is one."
        ),
    )
    parser.add_argument(
        "checks", nargs="*", metavar="CHECK", help="only these (camera = every camera:<name>)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--bundle", type=Path, default=None, metavar="DIR", help="also write a redacted .tar.gz"
    )
    parser.add_argument(
        "--local", action="store_true", help="run here even if the daemon is running"
    )
    parser.add_argument(
        "--camera-window",
        type=float,
        default=DiagOptions.camera_window_s,
        metavar="S",
        help="seconds each camera is sampled (default %(default)s)",
    )
    parser.set_defaults(func=run)


def ask_daemon(loaded: LoadedConfig, names: list[str]) -> DiagReport | None:
    """The daemon's report, or None when it is not running (or cannot answer)."""
    socket_path = Path(loaded.config.control.socket_path)
    try:
        reply: dict[str, Any] = request(
            socket_path, {"op": "diag", "checks": names}, timeout_s=DAEMON_DIAG_TIMEOUT_S
        )
    except AgentError as exc:
        logger.info("diag_local", reason=str(exc))
        return None
    if not reply.get("ok") or not isinstance(reply.get("report"), dict):
        logger.warning("diag_daemon_refused", reply=reply)
        return None
    return DiagReport.from_json(reply["report"], source="daemon")


def run(args: argparse.Namespace) -> int:
    loaded: LoadedConfig | None
    error: ConfigError | None = None
    try:
        loaded = load_from_args(args, file_optional=True)
        configure_logging_from(loaded, args)
    except ConfigError as exc:
        loaded, error = None, exc
        log.configure(level=getattr(args, "log_level", None) or "warning")
    names: list[str] = list(args.checks)
    report = None
    if loaded is not None and not args.local:
        report = ask_daemon(loaded, names)
    if report is None:
        opts = DiagOptions(camera_window_s=args.camera_window)
        report = run_checks(loaded, names or None, config_error=error, options=opts)
    bundle = write_bundle(args.bundle, report, loaded) if args.bundle is not None else None
    as_json = args.json or not sys.stdout.isatty()
    if args.json:
        doc = report.to_json()
        if bundle is not None:
            doc["summary"]["bundle"] = str(bundle)
        print_json(doc)
    elif as_json and bundle is not None:
        # A script asked for a bundle: stdout is its path alone; the report is inside.
        sys.stderr.write(summary_line(report) + "\n")
    elif as_json:
        print_json(report.to_json())
    else:
        render_table(report, sys.stdout)
    if bundle is not None and not args.json:
        print(bundle)
    return report.exit_code
