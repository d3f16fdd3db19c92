"""``edge-agent``: the device daemon and its local commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agent import __version__
from agent.cli.common import report_error
from agent.errors import AgentError

# Each module has register(subparsers); the order is the order of --help.
COMMAND_MODULES: tuple[str, ...] = (
    "agent.cli.run",
    "agent.cli.validate",
    "agent.cli.diag",
    "agent.cli.status",
    "agent.cli.update",
    "agent.cli.demo",
    "agent.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Edge vision agent: camera inference, MQTT telemetry, signed model updates.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="override logging.level",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except AgentError as exc:
        return report_error(parser.prog, exc)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
