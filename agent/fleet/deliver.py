"""``edge-fleet publish``, ``serve``, ``rollout``: manifests out, chunks served, states followed."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.errors import CommandError, Reason
from agent.fleet.chunkserver import ChunkServer
from agent.fleet.keys import signers_for
from agent.fleet.mqttclient import BrokerTls, FleetClient
from agent.fleet.served import ServedBundle, load_bundle
from agent.fleet.track import DeviceState, Tracker, outcome, split_canary
from agent.log import get_logger
from agent.update.store.truststore import load_root_file
from agent.update.transfer.wire import Topics
from agent.update.trust.envelope import canonical_bytes, parse_envelope, sign_envelope, strict_loads
from agent.update.trust.manifest import MANIFEST_PAYLOAD_TYPE, parse_manifest
from agent.update.trust.verify import MAX_ENVELOPE_BYTES

log = get_logger(__name__)


def add_broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    parser.add_argument("--ca", default="", help="CA bundle for mqtts://")
    parser.add_argument("--cert", default="", help="client certificate (mutual TLS)")
    parser.add_argument("--key", default="", help="client key (mutual TLS)")
    parser.add_argument("--topic-root", default="ea/v1")


def connect(args: argparse.Namespace) -> FleetClient:
    tls = BrokerTls(ca=args.ca, cert=args.cert, key=args.key)
    return FleetClient(args.broker, tls=tls).connect()


def _summary(states: dict[str, DeviceState]) -> dict[str, Any]:
    return {
        d: {"status": s.status, "reason": s.reason, "status_version": s.status_version}
        for d, s in sorted(states.items())
    }


def deliver(
    client: FleetClient,
    topics: Topics,
    bundle: ServedBundle,
    devices: list[str] | None,
    timeout_s: float,
) -> dict[str, DeviceState]:
    """Publish the manifest retained, serve its chunks, follow the devices to the end."""
    stop = threading.Event()
    tracker = Tracker(topics, bundle.deployment_id)
    tracker.attach(client)
    server = ChunkServer(client, topics, [bundle], stop)
    server.start()
    manifest = bundle.manifest
    client.publish_wait(
        topics.deploy(manifest.fleet, manifest.slot), bundle.envelope_bytes, retain=True
    )
    log.info("manifest_published", deployment=bundle.deployment_id, devices=devices)
    try:
        return tracker.wait(devices, timeout_s)
    finally:
        stop.set()
        server.join()
        client.unsubscribe(topics.model_update_filter(bundle.deployment_id))
        client.unsubscribe(topics.request_filter(bundle.deployment_id))


def run_publish(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    devices = list(bundle.manifest.devices) if bundle.manifest.devices else None
    client = connect(args)
    try:
        states = deliver(client, Topics(args.topic_root), bundle, devices, args.timeout)
    finally:
        client.close()
    result = outcome(states, devices if devices is not None else list(states))
    print(json.dumps({"deployment_id": bundle.deployment_id, "devices": _summary(states)}))
    return 0 if not result.failed and not result.pending else 1


def run_serve(args: argparse.Namespace) -> int:
    bundles = [load_bundle(path) for path in args.bundles]
    client = connect(args)
    stop = threading.Event()
    server = ChunkServer(client, Topics(args.topic_root), bundles, stop)
    server.start()
    log.info("chunk_server_running", deployments=[b.deployment_id for b in bundles])
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
        (canary, base.manifest_version, f"{base.deployment_id}-canary"),
        (rest, base.manifest_version + 1, base.deployment_id),
    ]
    client = connect(args)
    report: dict[str, Any] = {"deployment_id": base.deployment_id, "stages": []}
    code = 0
    try:
        for name, (group, version, dep) in zip(("canary", "rest"), stages, strict=True):
            if not group:
                continue
            staged = restage(bundle, args.keys, group, version, dep)
            states = deliver(client, Topics(args.topic_root), staged, group, args.timeout)
            result = outcome(states, group)
            report["stages"].append(
                {"stage": name, "deployment_id": dep, "devices": _summary(states)}
            )
            if result.halts(args.halt_on_failures):
                report["halted"] = {
                    "stage": name,
                    "failed": list(result.failed),
                    "pending": list(result.pending),
                }
                code = 1
                break
    finally:
        client.close()
    print(json.dumps(report))
    return code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish = sub.add_parser("publish", help="publish a bundle's manifest and serve its chunks")
    publish.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    publish.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    add_broker_args(publish)
    publish.set_defaults(func=run_publish)

    serve = sub.add_parser("serve", help="long-running chunk server for one or more bundles")
    serve.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE_DIR")
    serve.add_argument("--seconds", type=float, default=0, help="stop after N s (0: never)")
    add_broker_args(serve)
    serve.set_defaults(func=run_serve)

    rollout = sub.add_parser("rollout", help="canary devices first, then the rest")
    rollout.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    rollout.add_argument("--canary", type=int, default=1, help="devices in the canary stage")
    rollout.add_argument("--halt-on-failures", type=int, default=1, help="stop at K failures")
    rollout.add_argument("--devices", nargs="+", default=None, metavar="ID")
    rollout.add_argument("--keys", type=Path, required=True, metavar="DIR", help="release keys")
    rollout.add_argument("--timeout", type=float, default=3600.0, help="seconds per stage")
    add_broker_args(rollout)
    rollout.set_defaults(func=run_rollout)
