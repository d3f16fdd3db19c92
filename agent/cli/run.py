"""``edge-agent run [--config P]``: the daemon in the foreground (what systemd runs)."""

from __future__ import annotations

import argparse

from agent.cli.common import config_options, configure_logging_from, load_from_args


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

    loaded = load_from_args(args)
    configure_logging_from(loaded, args)
    supervisor = Supervisor(loaded)
    supervisor.install_signal_handlers()
    return supervisor.run()
