"""``edge-agent update status|install|rollback|recover``: the local side of signed model updates."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from agent.cli.common import config_options, configure_logging_from, load_from_args, print_json
from agent.config.root import AgentConfig
from agent.diag.updates import slot_status_line
from agent.errors import CommandError, Reason
from agent.inference.registry import BackendOptions
from agent.update.store.factory import build_installer
from agent.update.store.journal import read_status
from agent.update.store.localbundle import install_from_dir
from agent.update.store.outcome import InstallResult
from agent.update.store.probe import OfflineProbe
from agent.update.store.slotmodel import SlotDetectors


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "update",
        help="signed model updates: status, install from local media, rollback",
        description="Inspect and drive signed model updates on this device.",
    )
    actions = parser.add_subparsers(dest="update_command", metavar="ACTION", required=True)
    common = config_options()
    status = actions.add_parser("status", parents=[common], help="per slot: versions and phase")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")
    status.set_defaults(func=run_status)
    install = actions.add_parser(
        "install", parents=[common], help="install a signed bundle directory (exit 0 committed)"
    )
    install.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    install.add_argument("--json", action="store_true", help="print the result as JSON")
    install.set_defaults(func=run_install)
    rollback = actions.add_parser(
        "rollback", parents=[common], help="make the previous version of a slot active again"
    )
    rollback.add_argument("slot", nargs="?", default=None, metavar="SLOT")
    rollback.set_defaults(func=run_rollback)
    recover = actions.add_parser(
        "recover", parents=[common], help="finish an interrupted update (done at daemon start-up)"
    )
    recover.set_defaults(func=run_recover)


def _result_json(result: InstallResult) -> dict[str, Any]:
    doc = dataclasses.asdict(result)
    doc["reason"] = result.reason.value if result.reason else None
    return doc


def _probe(cfg: AgentConfig) -> OfflineProbe:
    # The slot config runs the bundle's golden cases as the slot would run the model.
    detectors = SlotDetectors(cfg)
    return OfflineProbe(BackendOptions(threads=cfg.board.inference_threads), detectors)


def run_status(args: argparse.Namespace) -> int:
    loaded = load_from_args(args, file_optional=True)
    configure_logging_from(loaded, args)
    cfg = loaded.config
    status = read_status(Path(cfg.storage.state_dir), Path(cfg.trust.root))
    if args.json:
        print_json(status)
        return 0
    print(f"trust root version: {status['trust']['root_version']}")
    if not status["slots"]:
        print("no updates installed")
    for slot, info in status["slots"].items():
        print(slot_status_line(slot, info))  # no "(None)" for what has not happened
    return 0


def run_install(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    configure_logging_from(loaded, args)
    cfg = loaded.config
    installer = build_installer(cfg, _probe(cfg))
    # Copied into the state dir before its files are checked: the journal never names the stick.
    result = install_from_dir(installer, args.bundle)
    _report(result, as_json=args.json)
    return result.exit_code


def _report(result: InstallResult, *, as_json: bool) -> None:
    if as_json:
        print_json(_result_json(result))
        return
    reason = f" ({result.reason.value})" if result.reason else ""
    print(f"{result.slot}: {result.outcome}{reason} manifest v{result.manifest_version}")
    if result.detail:
        print(f"  {result.detail}")


def run_rollback(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    configure_logging_from(loaded, args)
    cfg = loaded.config
    installer = build_installer(cfg, _probe(cfg))
    slot = args.slot
    if slot is None:
        slots = [m.slot for m in cfg.models]
        if len(slots) != 1:
            raise CommandError(Reason.MALFORMED, f"name the slot to roll back: {', '.join(slots)}")
        slot = slots[0]
    result = installer.operator_rollback(slot)
    _report(result, as_json=False)
    return 0


def run_recover(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    configure_logging_from(loaded, args)
    installer = build_installer(loaded.config, _probe(loaded.config))
    results = installer.recover()
    for result in results:
        _report(result, as_json=False)
    return 1 if any(r.outcome == "inconsistent" for r in results) else 0
