"""``edge-agent status [--json]``: live state from the daemon, or from disk with exit 3."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent import log
from agent.cli.common import config_options, configure_logging_from, load_from_args, print_json
from agent.config import AgentConfig, LoadedConfig
from agent.daemon.control import request
from agent.diag import ondisk, updates
from agent.diag.system import iso
from agent.errors import AgentError, ConfigError, DaemonNotRunningError
from agent.timeguard import read_last_known_good

logger = log.get_logger(__name__)
EXIT_NOT_RUNNING = DaemonNotRunningError.exit_code
STATUS_TIMEOUT_S = 5.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        parents=[config_options()],
        help="live state of the daemon; exit 3 when it is not running",
        description="Ask the running daemon over its control socket; read the disk when it is not.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=run)


def ask_daemon(socket_path: Path) -> tuple[dict[str, Any] | None, str]:
    """(reply, why not) — reply is None when the daemon is not there or does not answer."""
    try:
        reply: dict[str, Any] = request(socket_path, {"op": "status"}, timeout_s=STATUS_TIMEOUT_S)
    except AgentError as exc:
        return None, str(exc)
    if not reply.get("ok"):
        return None, f"daemon answered with an error: {reply.get('error')}"
    return reply, ""


def disk_status(cfg: AgentConfig, why: str, socket_path: Path) -> dict[str, Any]:
    state_dir = Path(cfg.storage.state_dir)
    try:
        update = updates.read_update_status(state_dir, Path(cfg.trust.root))
    except AgentError as exc:
        update = {"error": str(exc)}
    last_good = read_last_known_good(state_dir)
    return {
        "running": False,
        "reason": why,
        "socket": str(socket_path),
        "device": {"id": cfg.device.id, "fleet": cfg.device.fleet, "profile": cfg.device.profile},
        "update": update if update is not None else {"error": "update support not installed"},
        "trust": (update or {}).get("trust", {}),
        "outbox": ondisk.outbox_summary(state_dir),
        "last_known_good_time": iso(last_good) if last_good else None,
        "version": ondisk.version_info()["agent_version"],
    }


def health_line(health: dict[str, Any]) -> str:
    """``degraded: uplink (not connected to ...)``: the overall status and what is not ok."""
    status = str(health.get("status", "?"))
    bad = [
        f"{name} {comp.get('status')} ({comp.get('detail', '')})"
        for name, comp in sorted((health.get("components") or {}).items())
        if isinstance(comp, dict) and comp.get("status") != "ok"
    ]
    return status + (": " + "; ".join(bad) if bad else "")


def model_line(slot: str, info: dict[str, Any]) -> str:
    if info.get("error"):
        return f"{slot}: NOT LOADED {info.get('path', '')}: {info['error']}"
    runtime = " ".join(str(info[k]) for k in ("runtime", "version", "device") if info.get(k))
    shape = "x".join(str(d) for d in info.get("input_shape") or [])
    extra = ", ".join(x for x in (runtime, f"input {shape}" if shape else "") if x)
    return f"{slot}: {info.get('path', '?')} ({info.get('backend', '?')}" + (
        f", {extra})" if extra else ")"
    )


def outbox_line(outbox: dict[str, Any]) -> str:
    dropped = sum(
        int(n) for per in (outbox.get("dropped") or {}).values() for n in dict(per).values()
    )
    text = f"{outbox.get('depth', 0)} queued, {int(outbox.get('bytes', 0)) / 1e6:.1f} MB"
    return text + (f", {dropped} dropped" if dropped else "")


def print_live(reply: dict[str, Any]) -> None:
    daemon = reply.get("daemon") or {}
    link = reply.get("link") or {}
    health = reply.get("health") or {}
    print(
        f"running: pid {daemon.get('pid')}, version {daemon.get('version')}, "
        f"up {float(daemon.get('uptime_s') or 0):.0f} s"
    )
    print(f"health:  {health_line(health)}")
    print(
        f"broker:  {'connected' if link.get('connected') else 'DISCONNECTED'} {link.get('url', '')}"
    )
    for slot, info in sorted((reply.get("models") or {}).items()):
        print(f"model:   {model_line(slot, info if isinstance(info, dict) else {})}")
    outbox = reply.get("outbox")
    if outbox:
        print(f"outbox:  {outbox_line(outbox)}")
    alarms = reply.get("alarms") or {}
    if alarms:
        print(f"alarms:  {', '.join(sorted(alarms))}")


def print_disk(doc: dict[str, Any]) -> None:
    print(f"NOT RUNNING ({doc['reason']})")
    print(f"device:  {doc['device']['id']} (fleet {doc['device']['fleet']})")
    slots = (doc.get("update") or {}).get("slots") or {}
    for slot, info in sorted(slots.items()):
        active = info.get("active") or {}
        print(f"model:   {slot}: release {active.get('release')} phase {info.get('phase')}")
    print(f"trust:   root v{(doc.get('trust') or {}).get('root_version')}")
    outbox = doc["outbox"]
    depth = (outbox.get("rows") or {}).get("messages") if outbox.get("present") else 0
    print(f"outbox:  {depth} queued message(s)")
    print(f"clock:   last known good {doc.get('last_known_good_time')}")


def run(args: argparse.Namespace) -> int:
    loaded: LoadedConfig | None = None
    try:
        loaded = load_from_args(args, file_optional=True)
        configure_logging_from(loaded, args)
    except ConfigError as exc:
        # A broken config must not hide a running daemon: try the default socket.
        log.configure(level=getattr(args, "log_level", None) or "warning")
        logger.warning("status_config_invalid", error=str(exc))
    cfg = loaded.config if loaded is not None else AgentConfig()
    socket_path = Path(cfg.control.socket_path)
    reply, why = ask_daemon(socket_path)
    if reply is not None:
        live = {k: v for k, v in reply.items() if k != "ok"}
        live["running"] = True
        if args.json:
            print_json(live)
        else:
            print_live(live)
        return 0
    doc = disk_status(cfg, why, socket_path)
    if args.json:
        print_json(doc)
    else:
        print_disk(doc)
    return EXIT_NOT_RUNNING
