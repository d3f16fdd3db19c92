"""Pieces every CLI command shares: config options, loading, JSON output, error printing."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import log
from agent.config import LoadedConfig, default_config_path, load_config
from agent.errors import AgentError, ConfigError


def config_options() -> argparse.ArgumentParser:
    """Parent parser adding --config and --set to a subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $EDGE_AGENT_CONFIG or /etc/edge-agent/agent.toml)",
    )
    parent.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set mqtt.url=mqtt://10.0.0.2 (repeatable)",
    )
    return parent


def load_from_args(args: argparse.Namespace, *, file_optional: bool = False) -> LoadedConfig:
    """Load the config named by --config/$EDGE_AGENT_CONFIG, then env, then --set flags.

    With ``file_optional`` a missing default file is not an error (diag, demo).
    """
    path: Path | None = args.config or default_config_path()
    if file_optional and args.config is None and path is not None and not path.exists():
        path = None
    return load_config(path, assignments=args.assignments)


def configure_logging_from(loaded: LoadedConfig, args: argparse.Namespace) -> None:
    level = getattr(args, "log_level", None) or loaded.config.logging.level
    log.configure(level=level, fmt=loaded.config.logging.format)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def report_error(prog: str, exc: AgentError) -> int:
    """One line (plus one per config issue) on stderr; the error's exit code."""
    sys.stderr.write(f"{prog}: error: {exc}\n")
    if isinstance(exc, ConfigError):
        for issue in exc.issues:
            sys.stderr.write(f"  {issue.render()}\n")
    return exc.exit_code


def chosen_command(argv: Sequence[str] | None) -> str | None:
    """The subcommand named on the command line (first word that is not a global option)."""
    words = list(sys.argv[1:] if argv is None else argv)
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
        elif word == "--log-level":
            skip_next = True
        elif not word.startswith("-"):
            return word
    return None


def build_tool_parser(
    prog: str,
    description: str,
    commands: Mapping[str, str],
    argv: Sequence[str] | None = None,
) -> argparse.ArgumentParser:
    """A parser whose subcommands come from modules that each define ``register(subparsers)``.

    ``commands`` maps a command name to its module. Only the named command's module is
    imported when one is given, so ``edge-agent demo`` does not pay for the update,
    uplink and diagnostics imports (tens of MB on a Pi); ``--help`` imports them all.
    """
    from agent import __version__  # noqa: PLC0415 - avoids a cycle through agent/__init__

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="override logging.level",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = chosen_command(argv)
    if chosen is not None and chosen in commands:
        modules = [commands[chosen]]
    else:
        modules = list(dict.fromkeys(commands.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def run_tool(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse and dispatch; an AgentError becomes one line on stderr and its exit code."""
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except AgentError as exc:
        return report_error(parser.prog, exc)
    except KeyboardInterrupt:
        return 130
    return code
