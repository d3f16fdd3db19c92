"""``edge-agent run [--config P]``: the daemon in the foreground (what systemd runs)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agent import log
from agent.cli.common import config_options
from agent.config import default_config_path
from agent.config.desired import load_for_daemon


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run",
        parents=[config_options()],
        help="run the daemon in the foreground; exit 0 on SIGTERM/SIGINT",
        description="Run the agent: cameras, inference, MQTT telemetry, commands, control socket.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.daemon.supervisor import Supervisor  # noqa: PLC0415 - keep --help fast

    # The operator's desired config (MQTT ``config`` command) sits between file and env.
    # One on trial is counted (and reverted after a start that did not confirm it); one
    # that no longer validates is logged and left out rather than stopping the agent.
    loaded, trial = load_for_daemon(
        args.config or default_config_path(), assignments=args.assignments, now_s=time.time()
    )
    # The daemon also keeps its recent log in the state dir: `diag --bundle` ships it
    # where there is no journal (not under systemd).
    log.configure(
        level=getattr(args, "log_level", None) or loaded.config.logging.level,
        fmt=loaded.config.logging.format,
        ring_path=Path(loaded.config.storage.state_dir) / log.RING_FILE,
    )
    supervisor = Supervisor(loaded, config_trial=trial)
    supervisor.install_signal_handlers()
    return supervisor.run()
