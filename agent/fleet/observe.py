"""``edge-fleet heartbeat``, ``status`` and ``cmd``: freshness, fleet overview, remote commands."""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.errors import CommandError, Reason
from agent.fleet.deliver import add_broker_args, connect
from agent.fleet.keys import signers_for
from agent.update.store.truststore import load_root_file
from agent.update.transfer.heartbeat import Latest, make_heartbeat
from agent.update.transfer.wire import Topics

DAY_S = 86400


def run_heartbeat(args: argparse.Namespace) -> int:
    root = load_root_file(args.keys / "root.json")
    signers = signers_for(args.keys, root, "heartbeat")
    if not signers:
        raise CommandError(Reason.UNSIGNED, f"no heartbeat key in {args.keys}")
    latest: dict[str, Latest] = {}
    for item in args.latest:
        slot, _, rest = item.partition("=")
        version, _, sha = rest.partition(":")
        if not slot or not version.isdigit():
            raise CommandError(Reason.MALFORMED, f"--latest wants SLOT=VERSION[:SHA], got {item!r}")
        latest[slot] = Latest(int(version), sha)
    now = time.time()
    data = make_heartbeat(
        version=args.version or int(now),
        expires_s=now + args.expires_in * DAY_S,
        fleet=args.fleet,
        latest=latest,
        keys=signers,
    )
    client = connect(args)
    try:
        client.publish_wait(Topics(args.topic_root).heartbeat(args.fleet), data, retain=True)
    finally:
        client.close()
    print(f"heartbeat published for fleet {args.fleet}")
    return 0


def collect(client: Any, root: str, wait_s: float) -> dict[str, dict[str, Any]]:
    """Retained device topics (state, health, op states, alarms) gathered for ``wait_s``."""
    devices: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def on_message(topic: str, payload: bytes) -> None:
        parts = topic[len(root) + 1 :].split("/")
        if len(parts) < 3 or parts[0] != "d" or not payload:
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        with lock:
            entry = devices.setdefault(parts[1], {"alarms": {}, "ops": {}})
            kind = parts[2]
            if kind in ("state", "health"):
                entry[kind] = doc
            elif kind == "a" and len(parts) >= 4:
                entry["alarms"][parts[3]] = doc
            elif kind == "op" and len(parts) >= 5:
                entry["ops"][f"{parts[3]}/{parts[4]}"] = doc

    for suffix in ("state", "health", "a/+", "op/+/+"):
        client.subscribe(f"{root}/d/+/{suffix}", on_message)
    time.sleep(wait_s)
    with lock:
        snapshot: dict[str, dict[str, Any]] = json.loads(json.dumps(devices))
    return snapshot


def _row(device: str, entry: dict[str, Any]) -> dict[str, Any]:
    state = entry.get("state", {})
    ops = entry.get("ops", {})
    current = max(ops.items(), key=lambda kv: kv[1].get("status_version", 0), default=None)
    return {
        "device": device,
        "online": bool(state.get("online", False)),
        "agent_version": state.get("agent_version"),
        "models": state.get("models", {}),
        "health": entry.get("health", {}).get("status"),
        "alarms": sorted(entry.get("alarms", {})),
        "operation": (
            {"op": current[0], **{k: current[1].get(k) for k in ("status", "reason")}}
            if current
            else None
        ),
    }


def run_status(args: argparse.Namespace) -> int:
    client = connect(args)
    try:
        devices = collect(client, args.topic_root, args.wait)
    finally:
        client.close()
    rows = [_row(d, e) for d, e in sorted(devices.items())]
    if args.fleet:
        rows = [
            r
            for r in rows
            if devices[r["device"]].get("state", {}).get("fleet", args.fleet) == args.fleet
        ]
    if args.json:
        print(json.dumps({"devices": rows}))
        return 0
    table = Table(title=f"edge-agent fleet ({len(rows)} devices)")
    for column in ("device", "online", "models", "health", "alarms", "operation"):
        table.add_column(column)
    for row in rows:
        op = row["operation"]
        table.add_row(
            row["device"],
            "yes" if row["online"] else "no",
            json.dumps(row["models"]) if row["models"] else "-",
            row["health"] or "-",
            ",".join(row["alarms"]) or "-",
            f"{op['op']} {op['status']}" + (f" ({op['reason']})" if op["reason"] else "")
            if op
            else "-",
        )
    Console().print(table)
    return 0


def run_cmd(args: argparse.Namespace) -> int:
    try:
        body = json.loads(args.payload) if args.payload else {}
    except ValueError as exc:
        raise CommandError(Reason.MALFORMED, f"payload is not JSON: {exc}") from exc
    topics = Topics(args.topic_root)
    cmd_id = uuid.uuid4().hex[:12]
    done = threading.Event()
    last: dict[str, Any] = {}

    def on_state(_topic: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        if int(doc.get("status_version", 0)) > int(last.get("status_version", 0)):
            last.clear()
            last.update(doc)
            if not args.json:
                print(json.dumps(doc), flush=True)
            if doc.get("status") in ("successful", "failed"):
                done.set()

    client = connect(args)
    try:
        client.subscribe(topics.op(args.device, args.op, cmd_id), on_state)
        client.publish_wait(topics.cmd(args.device, args.op, cmd_id), json.dumps(body).encode())
        finished = done.wait(args.timeout)
    finally:
        client.close()
    if args.json:
        print(json.dumps({"cmd_id": cmd_id, "state": last, "finished": finished}))
    return 0 if finished and last.get("status") == "successful" else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    beat = sub.add_parser("heartbeat", help="sign and publish the fleet freshness heartbeat")
    beat.add_argument("--keys", type=Path, required=True, metavar="DIR")
    beat.add_argument("--fleet", default="default")
    beat.add_argument("--expires-in", type=float, default=1.0, metavar="DAYS")
    beat.add_argument("--version", type=int, default=0, help="default: the current Unix time")
    beat.add_argument("--latest", action="append", default=[], metavar="SLOT=VERSION[:SHA]")
    add_broker_args(beat)
    beat.set_defaults(func=run_heartbeat)

    status = sub.add_parser("status", help="one row per device from retained topics")
    status.add_argument("--fleet", default="")
    status.add_argument("--json", action="store_true")
    status.add_argument("--wait", type=float, default=1.0, help="seconds to collect")
    add_broker_args(status)
    status.set_defaults(func=run_status)

    cmd = sub.add_parser("cmd", help="send a command and follow its state to the end")
    cmd.add_argument("device", metavar="DEVICE")
    cmd.add_argument("op", metavar="OP")
    cmd.add_argument("payload", nargs="?", default="", metavar="JSON")
    cmd.add_argument("--timeout", type=float, default=60.0)
    cmd.add_argument("--json", action="store_true")
    add_broker_args(cmd)
    cmd.set_defaults(func=run_cmd)
