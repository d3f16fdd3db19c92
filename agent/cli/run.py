"""``edge-agent run [--config P]``: the daemon in the foreground (what systemd runs)."""

from __future__ import annotations

import argparse

from agent.cli.common import config_options, configure_logging_from
from agent.config import default_config_path
from agent.config.desired import load_with_desired


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

    # The operator's desired config (MQTT ``config`` command) sits between file and env;
    # one that no longer validates is logged and left out rather than stopping the agent.
    loaded = load_with_desired(
        args.config or default_config_path(), assignments=args.assignments, strict=False
    )
    configure_logging_from(loaded, args)
    supervisor = Supervisor(loaded)
    supervisor.install_signal_handlers()
    return supervisor.run()
