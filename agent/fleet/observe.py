"""``edge-fleet heartbeat``, ``status`` and ``cmd``: freshness, fleet overview, remote commands."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from agent.errors import CommandError, Reason
from agent.fleet.deliver import add_broker_args, connect
from agent.fleet.fleetview import age, device_row, last_seen, render_lines
from agent.fleet.keys import signers_for
from agent.update.store.truststore import load_root_file
from agent.update.transfer.heartbeat import Latest, make_heartbeat
from agent.update.transfer.wire import Topics
from agent.update.trust.command import make_command

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


def collect(client: Any, root: str, wait_s: float, device: str = "+") -> dict[str, dict[str, Any]]:
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
        client.subscribe(f"{root}/d/{device}/{suffix}", on_message)
    time.sleep(wait_s)
    with lock:
        snapshot: dict[str, dict[str, Any]] = json.loads(json.dumps(devices))
    return snapshot


def run_status(args: argparse.Namespace) -> int:
    client = connect(args)
    try:
        devices = collect(client, args.topic_root, args.wait)
    finally:
        client.close()
    rows = [device_row(d, e) for d, e in sorted(devices.items())]
    if args.fleet:
        rows = [r for r in rows if r["fleet"] == args.fleet]
    if args.json:
        print(json.dumps({"devices": rows}))
        return 0
    title = f"fleet {args.fleet}" if args.fleet else "all fleets"
    print(f"{len(rows)} device(s), {title}")
    if rows:
        print("\n".join(line.rstrip() for line in render_lines(rows, time.time())))
    return 0


def run_cmd(args: argparse.Namespace) -> int:
    try:
        body = json.loads(args.payload) if args.payload else {}
    except ValueError as exc:
        raise CommandError(Reason.MALFORMED, f"payload is not JSON: {exc}") from exc
    if args.sign is not None:
        body = signed_body(args, body)
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
        seen = None if last else _seen(client, args.topic_root, args.device)
    finally:
        client.close()
    if args.json:
        doc: dict[str, Any] = {"cmd_id": cmd_id, "state": last, "finished": finished}
        if seen is not None:
            doc["no_answer"] = seen
        print(json.dumps(doc))
    elif seen is not None:
        print(f"no answer from {args.device} in {args.timeout:g} s ({seen})", file=sys.stderr)
    elif not finished:
        print(f"{args.device}: no final state in {args.timeout:g} s", file=sys.stderr)
    return 0 if finished and last.get("status") == "successful" else 1


def signed_body(args: argparse.Namespace, body: Any) -> dict[str, Any]:
    """``{"signed": envelope}``: the command role's signatures over op, device, fleet, body."""
    if not isinstance(body, dict):
        raise CommandError(Reason.MALFORMED, "a signed command's payload must be a JSON object")
    root = load_root_file(args.sign / "root.json")
    signers = signers_for(args.sign, root, "command") if "command" in root.roles else []
    if not signers:
        raise CommandError(Reason.UNSIGNED, f"no command key in {args.sign}")
    now = time.time()
    signed = make_command(
        op=args.op,
        device=args.device,
        fleet=args.fleet,
        sequence=int(now * 1000),  # above every earlier one: the operator keeps no counter
        expires_s=now + args.sign_expires_in,
        request=body,
        keys=signers,
    )
    return {"signed": signed}


def _seen(client: Any, root: str, device: str) -> str:
    """Where a silent device stands, from its retained topics: last seen, offline, unknown."""
    entry = collect(client, root, 0.5, device=device).get(device)
    if entry is None:
        return "never seen on this broker: unknown device?"
    stamp = last_seen(entry)
    online = entry.get("state", {}).get("online")
    when = f"last seen {age(time.time() - stamp)}" if stamp is not None else "last seen: unknown"
    return when + ("" if online else ", offline")


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
    cmd.add_argument(
        "--sign",
        type=Path,
        default=None,
        metavar="KEYS_DIR",
        help="sign the request with the root's command role (required by fleets whose root "
        "has one, for config)",
    )
    cmd.add_argument("--fleet", default="default", help="with --sign: the device's fleet")
    cmd.add_argument(
        "--sign-expires-in", type=float, default=300.0, metavar="S", help="with --sign"
    )
    add_broker_args(cmd)
    cmd.set_defaults(func=run_cmd)
