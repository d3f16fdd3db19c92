"""``edge-agent``: the device daemon and its local commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent.cli.common import build_tool_parser, run_tool

# Command name → module with register(subparsers); the order is the order of --help.
COMMANDS: dict[str, str] = {
    "run": "agent.cli.run",
    "validate-config": "agent.cli.validate",
    "diag": "agent.cli.diag",
    "status": "agent.cli.status",
    "update": "agent.cli.update",
    "demo": "agent.cli.demo",
    "bench": "agent.cli.bench",
    "model": "agent.cli.model",
    "setup-service": "agent.cli.setup_service",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    return build_tool_parser(
        "edge-agent",
        "Edge vision agent: camera inference, MQTT telemetry, signed model updates.",
        COMMANDS,
        argv,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
