"""Root metadata to the devices: the whole chain retained, and a check before publishing.

``edge-fleet root publish DIR --broker URL --fleet F`` (and ``root rotate ... --broker``)
retains every ``DIR/roots/<N>.root.json`` on ``<root>/f/<fleet>/trust/root/<N>`` and the
latest on ``trust/root`` (CONTRACT §4), versions first, so a device that sees the latest
finds every step of the walk (``agent/update/transfer/rootchain.py``).

``check_fleet_root`` runs before ``publish``/``rollout`` put a manifest out: the fleet's
retained root must be one whose release role signs the bundle (threshold) and not older
than the root the manifest names; otherwise every device would reject it as ``unsigned``
(the state after a rotation that was never published).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from agent.errors import CommandError, Reason, VerificationError
from agent.fleet.mqttclient import BrokerTls, FleetClient
from agent.log import get_logger
from agent.update.transfer.wire import Topics
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import Manifest
from agent.update.trust.root import load_root_bytes
from agent.update.trust.verify import MAX_ENVELOPE_BYTES

log = get_logger(__name__)

_ROOT_FILE = re.compile(r"^(\d{1,6})\.root\.json$")


def root_chain(keys_dir: Path) -> dict[int, bytes]:
    """Every root version written by ``keys init`` / ``root rotate``, by version."""
    found: dict[int, bytes] = {}
    for path in sorted((keys_dir / "roots").glob("*.root.json")):
        match = _ROOT_FILE.match(path.name)
        if match is not None:
            found[int(match.group(1))] = path.read_bytes()
    if not found:
        raise CommandError(Reason.MALFORMED, f"no roots/<N>.root.json in {keys_dir}")
    return found


def publish_roots(client: FleetClient, topics: Topics, fleet: str, keys_dir: Path) -> int:
    """Retain the chain, each version on its own topic, then the latest; its version."""
    chain = root_chain(keys_dir)
    for version in sorted(chain):
        client.publish_wait(topics.trust_root_version(fleet, version), chain[version], retain=True)
    latest = max(chain)
    client.publish_wait(topics.trust_root(fleet), chain[latest], retain=True)
    log.info("root_chain_published", fleet=fleet, versions=sorted(chain))
    return latest


def check_fleet_root(
    client: FleetClient, topics: Topics, manifest: Manifest, envelope_bytes: bytes
) -> None:
    """Refuse (``unsigned``) a bundle the fleet's retained root would not verify."""
    topic = topics.trust_root(manifest.fleet)
    data = client.retained(topic)
    hint = "publish the root chain first: edge-fleet root publish KEYS_DIR --broker URL --fleet F"
    if data is None:
        if manifest.root_version > 1:
            raise CommandError(
                Reason.UNSIGNED,
                f"fleet {manifest.fleet} has no root on {topic}; its devices cannot trust a "
                f"bundle signed under root v{manifest.root_version}; {hint}",
            )
        return  # devices provisioned with root v1 verify it as they are
    try:
        root = load_root_bytes(data)
    except VerificationError as exc:
        raise CommandError(
            Reason.UNSIGNED, f"the root retained on {topic} is invalid: {exc}"
        ) from exc
    if manifest.root_version > root.version:
        raise CommandError(
            Reason.UNSIGNED,
            f"bundle names root v{manifest.root_version}, the fleet's retained root is "
            f"v{root.version}; {hint}",
        )
    envelope = parse_envelope(envelope_bytes, MAX_ENVELOPE_BYTES, "manifest")
    try:
        root.require(envelope, "release")
    except VerificationError as exc:
        raise CommandError(
            Reason.UNSIGNED,
            f"bundle is not signed by the release keys of the fleet's root v{root.version} "
            f"({exc.message}); re-sign it with the current keys, or {hint}",
        ) from exc


def add_publish_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--broker", required=required, default=None, help="publish the root chain to this broker"
    )
    parser.add_argument("--fleet", default="default", help="fleet whose trust topics get it")
    parser.add_argument("--ca", default="", help="CA bundle for mqtts://")
    parser.add_argument("--cert", default="", help="client certificate (mutual TLS)")
    parser.add_argument("--key", default="", help="client key (mutual TLS)")
    parser.add_argument("--topic-root", default="ea/v1")


def publish_from_args(args: argparse.Namespace, keys_dir: Path) -> int:
    tls = BrokerTls(ca=args.ca, cert=args.cert, key=args.key)
    client = FleetClient(args.broker, tls=tls).connect()
    try:
        latest = publish_roots(client, Topics(args.topic_root), args.fleet, keys_dir)
    finally:
        client.close()
    print(f"root chain v1..v{latest} retained for fleet {args.fleet}")
    return latest


def run_publish(args: argparse.Namespace) -> int:
    publish_from_args(args, args.dir)
    return 0


def register(root_actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``edge-fleet root publish``: added to the ``root`` commands of ``agent.fleet.keys``."""
    publish = root_actions.add_parser(
        "publish", help="retain every root version (and the latest) on the fleet's trust topics"
    )
    publish.add_argument("dir", type=Path, metavar="DIR")
    add_publish_args(publish, required=True)
    publish.set_defaults(func=run_publish)
