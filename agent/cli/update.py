"""``edge-agent update status|install|rollback|recover``: the local side of signed model updates."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.cli.common import config_options, configure_logging_from, load_from_args, print_json
from agent.config.root import AgentConfig
from agent.daemon import instance
from agent.daemon.control import request
from agent.daemon.local_update import (
    INSTALL_TIMEOUT_S,
    LOCK_WAIT_S,
    ROLLBACK_TIMEOUT_S,
    error_from_reply,
    pick_slot,
    result_doc,
    result_from_doc,
)
from agent.diag.updates import slot_status_line
from agent.errors import DaemonNotRunningError, InstanceError, Reason
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
        "rollback",
        parents=[common],
        help="make the previous version of a slot active again (through the daemon if it runs)",
    )
    rollback.add_argument("slot", nargs="?", default=None, metavar="SLOT")
    rollback.set_defaults(func=run_rollback)
    recover = actions.add_parser(
        "recover", parents=[common], help="finish an interrupted update (done at daemon start-up)"
    )
    recover.set_defaults(func=run_recover)


def _result_json(result: InstallResult) -> dict[str, Any]:
    return result_doc(result)


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


def _through_daemon(
    cfg: AgentConfig, op: str, payload: dict[str, Any], timeout_s: float
) -> dict[str, Any] | None:
    """The running daemon's answer to a local update command; None when no daemon runs.

    With a daemon up, the disk is its business (issue 17.4): a daemon that holds the state
    dir but does not answer on its socket is an error, never a reason to go around it.
    """
    socket_path = Path(cfg.control.socket_path)
    try:
        reply = request(socket_path, {"op": op, **payload}, timeout_s=timeout_s)
    except DaemonNotRunningError:
        state_dir = Path(cfg.storage.state_dir)
        pid = instance.holder(state_dir)
        if pid is None:
            return None
        raise InstanceError(
            Reason.ALREADY_RUNNING,
            f"a daemon (pid {pid or 'unknown'}) holds {state_dir} but does not answer on "
            f"{socket_path}; its files are left alone",
            pid=pid,
        ) from None
    if not reply.get("ok"):
        raise error_from_reply(reply)
    return reply


def run_install(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    configure_logging_from(loaded, args)
    cfg = loaded.config
    bundle = Path(args.bundle).absolute()  # the daemon resolves nothing against our cwd
    reply = _through_daemon(cfg, "update_install", {"bundle": str(bundle)}, INSTALL_TIMEOUT_S)
    if reply is not None:
        result = result_from_doc(reply["result"])
    else:
        installer = build_installer(cfg, _probe(cfg))
        with installer.install_lock.held(LOCK_WAIT_S):
            # Copied into the state dir before its files are checked: the journal never
            # names the stick.
            result = install_from_dir(installer, bundle)
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
    slot = pick_slot(args.slot, [m.slot for m in cfg.models])
    reply = _through_daemon(cfg, "update_rollback", {"slot": slot}, ROLLBACK_TIMEOUT_S)
    if reply is not None:
        result = result_from_doc(reply["result"])
    else:
        installer = build_installer(cfg, _probe(cfg))
        with installer.install_lock.held(LOCK_WAIT_S):
            result = installer.operator_rollback(slot)
    _report(result, as_json=False)
    return 0


def run_recover(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    configure_logging_from(loaded, args)
    cfg = loaded.config
    reply = _through_daemon(cfg, "update_recover", {}, INSTALL_TIMEOUT_S)
    if reply is not None:
        results = [result_from_doc(doc) for doc in reply["results"]]
    else:
        installer = build_installer(cfg, _probe(cfg))
        with installer.install_lock.held(LOCK_WAIT_S):
            results = installer.recover()
    for result in results:
        _report(result, as_json=False)
    return 1 if any(r.outcome == "inconsistent" for r in results) else 0
