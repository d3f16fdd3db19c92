"""``edge-agent``: the device daemon and its local commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent.cli.common import build_tool_parser, run_tool

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
    return build_tool_parser(
        "edge-agent",
        "Edge vision agent: camera inference, MQTT telemetry, signed model updates.",
        COMMAND_MODULES,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
