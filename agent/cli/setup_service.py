"""``edge-agent setup-service``: unit, drop-ins, tmpfiles/sysusers entries, /etc/edge-agent."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.errors import ConfigError
from agent.service_setup import (
    BOARD_DROPINS,
    InstallPlan,
    ServiceSetupError,
    Target,
    boards_for_profile,
    exec_path,
    install,
    profile_of_config,
    require_root,
    uninstall,
)

DEFAULT_PROFILE = "x86-gateway"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "setup-service",
        help="install the systemd service from this package (root)",
        description=(
            "Install the unit (ExecStart = this install's edge-agent), the board's drop-ins, "
            "tmpfiles.d and sysusers.d entries and /etc/edge-agent/agent.toml (only when "
            "absent), then systemctl daemon-reload. Safe to run again."
        ),
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install below DIR (an image being built); nothing is started",
    )
    parser.add_argument(
        "--board",
        action="append",
        choices=sorted(BOARD_DROPINS),
        default=None,
        help="drop-ins for this board (repeatable; default: from the profile)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="board profile for a new agent.toml and the default drop-ins "
        "(default: the existing config's device.profile, else x86-gateway)",
    )
    parser.add_argument(
        "--prefix",
        type=Path,
        default=None,
        help="the venv holding bin/edge-agent (default: this one)",
    )
    parser.add_argument("--enable", action="store_true", help="enable the unit at boot")
    parser.add_argument("--now", action="store_true", help="start (or restart) it now")
    parser.add_argument(
        "--uninstall",
        action="store_true",
        help="remove the unit and entries; config and state stay",
    )
    parser.add_argument(
        "--purge",
        action="store_true",
        help="with --uninstall: also remove /etc/edge-agent and the state directories",
    )
    parser.set_defaults(func=run)


def _plan(args: argparse.Namespace, target: Target) -> InstallPlan:
    profile = args.profile or profile_of_config(target) or DEFAULT_PROFILE
    try:
        boards = args.board or boards_for_profile(profile)
    except ConfigError as exc:
        raise ServiceSetupError("unknown_profile", str(exc)) from exc
    if "none" in boards and len(boards) > 1:
        raise ServiceSetupError("bad_flags", "--board none cannot be combined with other boards")
    return InstallPlan(
        target=target,
        boards=tuple(dict.fromkeys(boards)),
        profile=profile,
        program=exec_path(target, args.prefix),
        enable=args.enable,
        now=args.now,
    )


def run(args: argparse.Namespace) -> int:
    target = Target(args.root)
    if args.purge and not args.uninstall:
        raise ServiceSetupError("bad_flags", "--purge only goes with --uninstall")
    if args.now and not target.live:
        raise ServiceSetupError("bad_flags", "--now starts the service: not with --root")
    require_root(target)
    if args.uninstall:
        report = uninstall(target, purge=args.purge)
        summary = f"edge-agent service removed under {target.root}"
        if not args.purge:
            summary += " (config and state kept; --purge removes them)"
    else:
        plan = _plan(args, target)
        report = install(plan)
        boards = ", ".join(plan.boards) or "none"
        summary = (
            f"edge-agent service installed under {target.root} "
            f"(ExecStart={plan.program} run, profile {plan.profile}, boards: {boards})"
        )
    for line in report.lines:
        print(line)
    for warning in report.warnings:
        sys.stderr.write(f"edge-agent setup-service: warning: {warning}\n")
    print(summary)
    return 0
