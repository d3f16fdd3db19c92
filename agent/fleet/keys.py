"""``edge-fleet keys init`` and ``edge-fleet root rotate``: offline keys and root metadata.

Keys directory layout: ``keys/<role>-<n>.pem`` (0600, PKCS#8), ``root.json`` (the
latest root, provisioned to devices as ``[trust] root``) and ``roots/<N>.root.json``
(every version, shipped in bundles so devices can walk N→N+1).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import CommandError, Reason
from agent.fleet import keyfiles, rootpub
from agent.fsutil import atomic_write_bytes
from agent.update.store.truststore import load_root_file
from agent.update.trust import crypto
from agent.update.trust.envelope import canonical_bytes, sign_envelope
from agent.update.trust.root import KNOWN_ROLES, ROOT_PAYLOAD_TYPE, Root, format_time

DAY_S = 86400


def root_document(
    version: int,
    expires_s: float,
    role_keys: Mapping[str, Iterable[Ed25519PrivateKey]],
    thresholds: Mapping[str, int],
) -> dict[str, Any]:
    keys: dict[str, dict[str, str]] = {}
    roles: dict[str, dict[str, Any]] = {}
    for role, privates in role_keys.items():
        ids = []
        for private in privates:
            raw = crypto.public_raw(private)
            keys[crypto.key_id(raw)] = {"keytype": "ed25519", "public": raw.hex()}
            ids.append(crypto.key_id(raw))
        roles[role] = {"keyids": sorted(ids), "threshold": thresholds[role]}
    return {
        "_type": "root",
        "spec_version": "1.0",
        "version": version,
        "expires": format_time(expires_s),
        "keys": keys,
        "roles": roles,
    }


def sign_root(document: Mapping[str, Any], signers: Iterable[Ed25519PrivateKey]) -> bytes:
    return sign_envelope(ROOT_PAYLOAD_TYPE, canonical_bytes(document), signers).to_bytes()


def private_keys(keys_dir: Path) -> dict[str, Ed25519PrivateKey]:
    """Every private key under ``DIR/keys`` by key id (retired keys excluded)."""
    found: dict[str, Ed25519PrivateKey] = {}
    for path in sorted((keys_dir / "keys").glob("*.pem")):
        key = keyfiles.load_private_key(path)
        found[crypto.private_key_id(key)] = key
    return found


def signers_for(keys_dir: Path, root: Root, role: str) -> list[Ed25519PrivateKey]:
    keys = private_keys(keys_dir)
    return [keys[k] for k in sorted(root.role(role).keyids) if k in keys]


def _write_root(keys_dir: Path, version: int, data: bytes) -> None:
    atomic_write_bytes(keys_dir / "roots" / f"{version}.root.json", data)
    atomic_write_bytes(keys_dir / "root.json", data)


def init_keys(
    keys_dir: Path,
    *,
    threshold: int = 1,
    root_keys: int | None = None,
    release_threshold: int = 1,
    expires_in_days: int = 365,
) -> Root:
    if (keys_dir / "root.json").exists():
        raise CommandError(Reason.MALFORMED, f"{keys_dir} already holds root.json")
    counts = {
        "root": max(root_keys or threshold, threshold),
        "release": release_threshold,
        "heartbeat": 1,
    }
    generated: dict[str, list[Ed25519PrivateKey]] = {}
    for role, count in counts.items():
        generated[role] = [crypto.generate_key() for _ in range(count)]
        for n, key in enumerate(generated[role], start=1):
            keyfiles.save_private_key(keys_dir / "keys" / f"{role}-{n}.pem", key)
    thresholds = {"root": threshold, "release": release_threshold, "heartbeat": 1}
    # Downgrades need the offline root keys: the rarest and best-guarded signature.
    generated["downgrade"] = generated["root"]
    thresholds["downgrade"] = threshold
    expires = time.time() + expires_in_days * DAY_S
    data = sign_root(root_document(1, expires, generated, thresholds), generated["root"])
    _write_root(keys_dir, 1, data)
    return load_root_file(keys_dir / "root.json")


def rotate_root(
    keys_dir: Path,
    *,
    roles: Iterable[str],
    thresholds: Mapping[str, int] | None = None,
    expires_in_days: int = 365,
) -> Root:
    """Root N+1 with fresh keys for ``roles``, signed by the old and the new root keys."""
    old = load_root_file(keys_dir / "root.json")
    have = private_keys(keys_dir)
    wanted = set(roles)
    unknown = wanted - set(KNOWN_ROLES)
    if unknown:
        raise CommandError(Reason.MALFORMED, f"unknown roles: {sorted(unknown)}")
    new_thresholds = {name: role.threshold for name, role in old.roles.items()}
    new_thresholds.update(thresholds or {})
    role_keys: dict[str, list[Ed25519PrivateKey]] = {}
    retired: list[Path] = []
    for name, role in old.roles.items():
        if name in wanted:
            count = max(len(role.keyids), new_thresholds[name])
            role_keys[name] = [crypto.generate_key() for _ in range(count)]
        else:
            missing = [k for k in role.keyids if k not in have]
            if missing:
                raise CommandError(Reason.MALFORMED, f"private keys of role {name} are missing")
            role_keys[name] = [have[k] for k in sorted(role.keyids)]
    for name in sorted(wanted - set(old.roles)):  # a role root N did not have (e.g. command)
        new_thresholds.setdefault(name, 1)
        role_keys[name] = [crypto.generate_key() for _ in range(new_thresholds[name])]
    if "root" in wanted and "downgrade" not in wanted and "downgrade" in role_keys:
        role_keys["downgrade"] = role_keys["root"]  # downgrade stays with the root keys
    for name in sorted(wanted):
        retired.extend(sorted((keys_dir / "keys").glob(f"{name}-*.pem")))
    old_signers = signers_for(keys_dir, old, "root")
    doc = root_document(
        old.version + 1, time.time() + expires_in_days * DAY_S, role_keys, new_thresholds
    )
    signers = {crypto.private_key_id(k): k for k in [*old_signers, *role_keys["root"]]}
    data = sign_root(doc, signers.values())
    for path in retired:
        target = keys_dir / "keys" / "retired" / f"v{old.version}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.rename(target)
    for name in wanted:
        for n, key in enumerate(role_keys[name], start=1):
            keyfiles.save_private_key(keys_dir / "keys" / f"{name}-{n}.pem", key)
    _write_root(keys_dir, old.version + 1, data)
    return load_root_file(keys_dir / "root.json")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="fleet signing keys").add_subparsers(
        dest="keys_command", metavar="ACTION", required=True
    )
    init = keys.add_parser("init", help="create root, release and heartbeat keys and root v1")
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument("--threshold", type=int, default=1, help="root signatures required")
    init.add_argument("--root-keys", type=int, default=None, help="root keys (default threshold)")
    init.add_argument("--release-threshold", type=int, default=1, help="release signatures")
    init.add_argument("--expires-in", type=int, default=365, metavar="DAYS")
    init.set_defaults(func=run_init)
    root = sub.add_parser("root", help="root metadata").add_subparsers(
        dest="root_command", metavar="ACTION", required=True
    )
    rotate = root.add_parser("rotate", help="sign root N+1 with old and new keys")
    rotate.add_argument("dir", type=Path, metavar="DIR")
    rotate.add_argument(
        "--role", action="append", default=[], choices=list(KNOWN_ROLES), help="rotate its keys"
    )
    rotate.add_argument(
        "--threshold", action="append", default=[], metavar="ROLE=N", help="new threshold"
    )
    rotate.add_argument("--expires-in", type=int, default=365, metavar="DAYS")
    rootpub.add_publish_args(rotate, required=False)  # with --broker: the chain goes out too
    rotate.set_defaults(func=run_rotate)
    rootpub.register(root)


def run_init(args: argparse.Namespace) -> int:
    root = init_keys(
        args.dir,
        threshold=args.threshold,
        root_keys=args.root_keys,
        release_threshold=args.release_threshold,
        expires_in_days=args.expires_in,
    )
    print(f"root v{root.version} written to {args.dir / 'root.json'}")
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    thresholds: dict[str, int] = {}
    for item in args.threshold:
        name, _, value = item.partition("=")
        if name not in KNOWN_ROLES or not value.isdigit():
            raise CommandError(Reason.MALFORMED, f"--threshold wants ROLE=N, got {item!r}")
        thresholds[name] = int(value)
    root = rotate_root(
        args.dir, roles=args.role, thresholds=thresholds, expires_in_days=args.expires_in
    )
    print(f"root v{root.version} written to {args.dir / 'root.json'}")
    if args.broker:  # devices learn it from the retained chain (issue 18.7)
        rootpub.publish_from_args(args, args.dir)
    return 0
