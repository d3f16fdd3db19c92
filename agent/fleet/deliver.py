"""``edge-fleet publish``, ``serve``, ``rollout``: manifests out, chunks served, states followed."""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agent.config.base import resolve_secret
from agent.errors import AgentError, CommandError, Reason
from agent.fleet.chunkserver import ChunkServer, add_share_arg
from agent.fleet.keys import signers_for
from agent.fleet.mqttclient import BrokerTls, FleetClient
from agent.fleet.rootpub import check_fleet_root
from agent.fleet.served import ServedBundle, load_bundle
from agent.fleet.track import (
    NO_ANSWER,
    Bars,
    DeviceState,
    StageOutcome,
    Tracker,
    outcome,
    split_canary,
)
from agent.log import get_logger
from agent.update.store.truststore import load_root_file
from agent.update.transfer.wire import Topics
from agent.update.trust.envelope import canonical_bytes, parse_envelope, sign_envelope, strict_loads
from agent.update.trust.manifest import MANIFEST_PAYLOAD_TYPE, Manifest, parse_manifest
from agent.update.trust.verify import MAX_ENVELOPE_BYTES

log = get_logger(__name__)


def add_broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    parser.add_argument("--ca", default="", help="CA bundle for mqtts://")
    parser.add_argument("--cert", default="", help="client certificate (mutual TLS)")
    parser.add_argument("--key", default="", help="client key (mutual TLS)")
    parser.add_argument("--username", default="", help="broker user name")
    parser.add_argument(
        "--password", default="", help="broker password, or file:PATH to read it from a file"
    )
    parser.add_argument("--topic-root", default="ea/v1")


def connect(args: argparse.Namespace) -> FleetClient:
    tls = BrokerTls(ca=args.ca, cert=args.cert, key=args.key)
    password = resolve_secret(SecretStr(args.password), "--password") if args.password else ""
    client = FleetClient(args.broker, tls=tls, username=args.username, password=password)
    return client.connect()


def manifest_key(bundle: ServedBundle) -> str:
    """What devices report as ``key``: the SHA-256 of the manifest envelope they answer."""
    return hashlib.sha256(bundle.envelope_bytes).hexdigest()


def check_not_older(client: FleetClient, topic: str, manifest: Manifest, force: bool) -> None:
    """Refuse to retain a manifest older than the one the deploy topic holds (devices would
    refuse it as a rollback, and the topic would be left pointing at it)."""
    held = client.retained(topic)
    if held is None:
        return
    try:
        current = parse_manifest(parse_envelope(held, MAX_ENVELOPE_BYTES).payload)
    except AgentError:
        return  # not a manifest we can read: the devices judge it
    if manifest.manifest_version < current.manifest_version and not force:
        raise CommandError(
            Reason.ROLLBACK,
            f"{topic} holds manifest v{current.manifest_version} ({current.deployment_id}); "
            f"v{manifest.manifest_version} is older and devices would refuse it as a rollback. "
            "Publish a newer manifest_version (see docs/operator-guide.md, rolling back), "
            "or --force to retain it anyway",
            held=current.manifest_version,
            offered=manifest.manifest_version,
        )


def fleet_members(client: FleetClient, topics: Topics, fleet: str) -> list[str] | None:
    """Devices whose retained ``state`` names ``fleet`` (None: no state names a fleet)."""
    members = []
    for topic, payload in client.retained_messages(f"{topics.root}/d/+/state").items():
        try:
            doc = json.loads(payload)
        except ValueError:
            continue
        device = topic.split("/")[-2]
        if isinstance(doc, dict) and doc.get("fleet") == fleet:
            members.append(device)
    return sorted(members) or None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one publication asked and what the devices answered."""

    deployment_id: str
    manifest_version: int
    key: str
    states: dict[str, DeviceState]
    answer_s: float

    @property
    def result(self) -> StageOutcome:
        return outcome(self.states, list(self.states))

    def summary(self) -> dict[str, Any]:
        return {d: _device_json(s) for d, s in sorted(self.states.items())}


def _device_json(state: DeviceState) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": state.status,
        "reason": state.reason if state.status != NO_ANSWER else NO_ANSWER,
        "status_version": state.status_version,
    }
    if state.detail:
        doc["detail"] = state.detail
    if state.earlier:
        doc["earlier"] = state.earlier
    return doc


def deliver(
    client: FleetClient,
    topics: Topics,
    bundle: ServedBundle,
    devices: list[str] | None,
    timeout_s: float,
    *,
    answer_s: float = 30.0,
    force: bool = False,
    title: str = "devices",
    share_group: str = "",
) -> Delivery:
    """Publish the manifest retained, serve its chunks, follow the devices' answers to it."""
    manifest = bundle.manifest
    deploy_topic = topics.deploy(manifest.fleet, manifest.slot)
    check_not_older(client, deploy_topic, manifest, force)
    # The fleet's retained root must trust the keys that signed it (issue 18.7).
    check_fleet_root(client, topics, manifest, bundle.envelope_bytes)
    if devices is None:
        devices = fleet_members(client, topics, manifest.fleet)
    stop = threading.Event()
    tracker = Tracker(topics, bundle.deployment_id, manifest_key(bundle), devices)
    tracker.attach(client)
    server = ChunkServer(
        client, topics, [bundle], stop, share_group=share_group, expect_devices=devices or ()
    )
    server.start()
    client.publish_wait(deploy_topic, bundle.envelope_bytes, retain=True)
    log.info("manifest_published", deployment=bundle.deployment_id, devices=devices)
    bars = Bars.for_stdout(title)
    try:
        states = tracker.wait(timeout_s, answer_s, on_change=bars.update)
    finally:
        bars.close()
        stop.set()
        server.join()
        client.unsubscribe(topics.model_update_filter(bundle.deployment_id))
        client.unsubscribe(topics.request_filter(bundle.deployment_id))
    return Delivery(bundle.deployment_id, manifest.manifest_version, tracker.key, states, answer_s)


def device_line(device: str, state: DeviceState, answer_s: float) -> str:
    text = state.status
    if state.status == NO_ANSWER:
        text += f": no state for this manifest in {answer_s:g} s"
        if state.earlier:
            text += f" (it answered this manifest before: {state.earlier})"
    elif state.reason:
        text += f" ({state.reason})"
        if state.detail:
            text += f": {state.detail}"
    elif state.status not in ("successful", "failed"):
        text += " (unfinished)"
    return f"  {device:<20} {text}"


def counts_line(result: StageOutcome) -> str:
    parts = [
        f"{len(result.succeeded)} successful",
        f"{len(result.failed)} failed",
        f"{len(result.no_answer)} no answer",
    ]
    if result.pending:
        parts.append(f"{len(result.pending)} unfinished")
    total = sum(len(x) for x in (result.succeeded, result.failed, result.no_answer, result.pending))
    return f"{total} device(s): " + ", ".join(parts)


def print_delivery(delivery: Delivery) -> None:
    for device, state in sorted(delivery.states.items()):
        print(device_line(device, state, delivery.answer_s))
    if not delivery.states:
        print("  no device answered")
    print("  " + counts_line(delivery.result), flush=True)


def run_publish(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    manifest = bundle.manifest
    devices = list(manifest.devices) if manifest.devices else None
    if not args.json:
        print(
            f"publishing {manifest.deployment_id}: manifest v{manifest.manifest_version}, "
            f"release {manifest.release}, slot {manifest.slot}, fleet {manifest.fleet}",
            flush=True,
        )
    client = connect(args)
    try:
        delivery = deliver(
            client,
            Topics(args.topic_root),
            bundle,
            devices,
            args.timeout,
            answer_s=args.answer_timeout,
            force=args.force,
            share_group=args.share_group or "",
        )
    finally:
        client.close()
    if args.json:
        doc = {"deployment_id": bundle.deployment_id, "devices": delivery.summary()}
        print(json.dumps(doc))
    else:
        print_delivery(delivery)
    ok = delivery.states and delivery.result.all_successful
    return 0 if ok else 1


def run_serve(args: argparse.Namespace) -> int:
    bundles = [load_bundle(path) for path in args.bundles]
    client = connect(args)
    stop = threading.Event()
    server = ChunkServer(
        client, Topics(args.topic_root), bundles, stop, share_group=args.share_group or ""
    )
    server.start()
    log.info(
        "chunk_server_running",
        deployments=[b.deployment_id for b in bundles],
        share_group=args.share_group or None,
    )
    try:
        stop.wait(args.seconds if args.seconds > 0 else None)
    finally:
        stop.set()
        server.join()
        client.close()
    return 0


def restage(
    bundle: ServedBundle, keys_dir: Path, devices: Sequence[str], version: int, dep: str
) -> ServedBundle:
    """The same files under a manifest re-signed for ``devices`` (one rollout stage)."""
    doc = strict_loads(parse_envelope(bundle.envelope_bytes, MAX_ENVELOPE_BYTES).payload)
    doc["targets"]["devices"] = list(devices)
    doc["manifest_version"] = version
    doc["deployment_id"] = dep
    root = load_root_file(keys_dir / "root.json")
    signers = signers_for(keys_dir, root, "release")
    if not signers:
        raise CommandError(Reason.UNSIGNED, f"no release key in {keys_dir}")
    payload = canonical_bytes(doc)
    envelope = sign_envelope(MANIFEST_PAYLOAD_TYPE, payload, signers).to_bytes()
    return replace(bundle, envelope_bytes=envelope, manifest=parse_manifest(payload))


def run_rollout(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    devices = args.devices or list(bundle.manifest.devices or [])
    if not devices:
        raise CommandError(Reason.MALFORMED, "rollout needs target devices (manifest or --devices)")
    canary, rest = split_canary(devices, args.canary)
    base = bundle.manifest
    stages = [
        ("canary", canary, base.manifest_version, f"{base.deployment_id}-canary"),
        ("rest", rest, base.manifest_version + 1, base.deployment_id),
    ]
    stages = [s for s in stages if s[1]]
    client = connect(args)
    report: dict[str, Any] = {"deployment_id": base.deployment_id, "stages": []}
    code = 0

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    try:
        for number, (name, group, version, dep) in enumerate(stages, 1):
            say(
                f"stage {number}/{len(stages)} {name}: {len(group)} device(s) "
                f"[{' '.join(group)}], deployment {dep}, manifest v{version}"
            )
            staged = restage(bundle, args.keys, group, version, dep)
            delivery = deliver(
                client,
                Topics(args.topic_root),
                staged,
                group,
                args.timeout,
                answer_s=args.answer_timeout,
                force=args.force,
                share_group=args.share_group or "",
                title=name,
            )
            if not args.json:
                print_delivery(delivery)
            result = delivery.result
            report["stages"].append(
                {"stage": name, "deployment_id": dep, "devices": delivery.summary()}
            )
            if result.halts(args.halt_on_failures):
                report["halted"] = {
                    "stage": name,
                    "failed": list(result.failed),
                    "no_answer": list(result.no_answer),
                    "pending": list(result.pending),
                }
                say(
                    f"halted at stage {name}: {len(result.failed)} failed "
                    f"(limit {args.halt_on_failures}), {len(result.no_answer)} no answer, "
                    f"{len(result.pending)} unfinished"
                )
                for later, *_ in stages[number:]:
                    say(f"stage {later}: not started")
                code = 1
                break
    finally:
        client.close()
    if args.json:
        print(json.dumps(report))
    elif code == 0:
        print(f"rollout {base.deployment_id}: every targeted device answered successful")
    return code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish = sub.add_parser("publish", help="publish a bundle's manifest and serve its chunks")
    publish.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    publish.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    _answer_args(publish)
    add_broker_args(publish)
    add_share_arg(publish)
    publish.set_defaults(func=run_publish)

    serve = sub.add_parser("serve", help="long-running chunk server for one or more bundles")
    serve.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE_DIR")
    serve.add_argument("--seconds", type=float, default=0, help="stop after N s (0: never)")
    add_broker_args(serve)
    add_share_arg(serve)
    serve.set_defaults(func=run_serve)

    rollout = sub.add_parser("rollout", help="canary devices first, then the rest")
    rollout.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    rollout.add_argument("--canary", type=int, default=1, help="devices in the canary stage")
    rollout.add_argument("--halt-on-failures", type=int, default=1, help="stop at K failures")
    rollout.add_argument("--devices", nargs="+", default=None, metavar="ID")
    rollout.add_argument("--keys", type=Path, required=True, metavar="DIR", help="release keys")
    rollout.add_argument("--timeout", type=float, default=3600.0, help="seconds per stage")
    _answer_args(rollout)
    add_broker_args(rollout)
    add_share_arg(rollout)
    rollout.set_defaults(func=run_rollout)


def _answer_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="a targeted device with no state for this manifest after S seconds is no_answer",
    )
    parser.add_argument(
        "--force", action="store_true", help="retain a manifest older than the one on the topic"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
