"""``edge-fleet``: the fleet operator's tool (keys, bundles, publish, rollout, status)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agent import __version__
from agent.cli.common import report_error
from agent.errors import AgentError
from agent.log import configure

# Each module has register(subparsers); the order is the order of --help.
COMMAND_MODULES: tuple[str, ...] = (
    "agent.fleet.keys",
    "agent.fleet.bundle",
    "agent.fleet.deliver",
    "agent.fleet.observe",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-fleet",
        description="Operate an edge-agent fleet: trust keys, signed model bundles, rollouts.",
    )
    parser.add_argument("--version", action="version", version=f"edge-fleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Logs go to stderr so that --json output is the only thing on stdout.
    configure(level="warning")
    try:
        code: int = args.func(args)
    except AgentError as exc:
        return report_error(parser.prog, exc)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
