"""``edge-fleet``: the fleet operator's tool (keys, bundles, publish, rollout, status)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent.cli.common import build_tool_parser, run_tool
from agent.log import configure

# Each module has register(subparsers); the order is the order of --help.
COMMAND_MODULES: tuple[str, ...] = (
    "agent.fleet.keys",
    "agent.fleet.bundle",
    "agent.fleet.deliver",
    "agent.fleet.observe",
)


def build_parser() -> argparse.ArgumentParser:
    return build_tool_parser(
        "edge-fleet",
        "Operate an edge-agent fleet: trust keys, signed model bundles, rollouts.",
        COMMAND_MODULES,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Logs go to stderr (warnings and up unless asked) so --json output owns stdout.
    level = parser.parse_known_args(argv)[0].log_level or "warning"
    configure(level=level)
    return run_tool(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
