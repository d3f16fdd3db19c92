"""``edge-fleet``: the fleet operator's tool (keys, bundles, publish, rollout, status)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent.cli.common import build_tool_parser, run_tool
from agent.log import configure

# Command name → module with register(subparsers); a module may register several.
COMMANDS: dict[str, str] = {
    "keys": "agent.fleet.keys",
    "root": "agent.fleet.keys",
    "bundle": "agent.fleet.bundle",
    "publish": "agent.fleet.deliver",
    "serve": "agent.fleet.deliver",
    "rollout": "agent.fleet.deliver",
    "heartbeat": "agent.fleet.observe",
    "status": "agent.fleet.observe",
    "cmd": "agent.fleet.observe",
    "console": "agent.fleet.console.cli",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    return build_tool_parser(
        "edge-fleet",
        "Operate an edge-agent fleet: trust keys, signed model bundles, rollouts.",
        COMMANDS,
        argv,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    # Logs go to stderr (warnings and up unless asked) so --json output owns stdout.
    level = parser.parse_known_args(argv)[0].log_level or "warning"
    configure(level=level)
    return run_tool(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
