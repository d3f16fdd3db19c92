"""``edge-fleet bundle create``: signed manifest + files + chunk index (+ root chain)."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import CommandError, Reason
from agent.fleet.golden import add_trial_args, with_trial
from agent.fleet.keys import signers_for
from agent.fleet.releasebind import bind_release_set, write_siblings
from agent.fsutil import atomic_write_bytes, sha256_file
from agent.update.store.bundle import CHUNK_INDEX_FILE, MANIFEST_FILE, ROOTS_DIR, build_chunk_index
from agent.update.store.truststore import load_root_file
from agent.update.trust.envelope import canonical_bytes, sign_envelope
from agent.update.trust.manifest import (
    MANIFEST_PAYLOAD_TYPE,
    MAX_CHUNK,
    MIN_CHUNK,
    SAFE_NAME_RE,
    check_https_url,
)
from agent.update.trust.root import Root, format_time

DAY_S = 86400
DEFAULT_CHUNK = 128 * 1024
FORMAT_BY_SUFFIX = {".tflite": "tflite", ".onnx": "onnx", ".engine": "tensorrt-engine"}
FORMAT_BY_SUFFIX[".plan"] = "tensorrt-engine"
HEALTH_KEYS = ("max_attempts", "smoke_inferences", "max_latency_ms", "trial_s")


@dataclass(frozen=True, slots=True)
class BundleSpec:
    model: Path
    slot: str
    fleet: str
    manifest_version: int
    release: int
    extra_files: Sequence[Path] = ()
    devices: Sequence[str] | None = None
    compat: Mapping[str, str] = field(default_factory=dict)
    health: Mapping[str, Any] = field(default_factory=dict)
    expires_in_days: float = 30.0
    chunk_size: int = DEFAULT_CHUNK
    deployment_id: str = ""
    downgrade: bool = False
    backend: str | None = None
    # Base URL the bundle directory is served from over HTTPS ("" = MQTT chunks only).
    https_url: str = ""
    # The operator serves chunks over MQTT too: devices fall back to them if HTTPS fails.
    mqtt_fallback: bool = True
    # The manifest's ``trial`` section (golden cases, shadow thresholds); empty: none.
    trial: Mapping[str, Any] = field(default_factory=dict)
    # Bundles of other slots released together with this one (releasebind.py), and the
    # release set's number (0: this bundle's release).
    siblings: Sequence[Path] = ()
    release_set: int = 0


def _https_block(spec: BundleSpec) -> dict[str, Any] | None:
    if not spec.https_url:
        return None
    try:
        url = check_https_url(spec.https_url, "--https-url")
    except ValueError as exc:
        raise CommandError(Reason.MALFORMED, str(exc)) from exc
    return {"url": url, "mqtt_fallback": spec.mqtt_fallback}


def manifest_document(
    spec: BundleSpec, root_version: int, now_s: float, index: bytes
) -> dict[str, Any]:
    files = [spec.model, *spec.extra_files]
    model_format = FORMAT_BY_SUFFIX.get(spec.model.suffix)
    if model_format is None:
        raise CommandError(Reason.MALFORMED, f"unknown model type {spec.model.suffix!r}")
    model: dict[str, Any] = {
        "file": spec.model.name,
        "release": spec.release,
        "format": model_format,
        "downgrade": spec.downgrade,
    }
    if spec.backend:
        model["backend"] = spec.backend
    transfer: dict[str, Any] = {
        "chunk_size": spec.chunk_size,
        "chunk_index": {
            "name": CHUNK_INDEX_FILE,
            "length": len(index),
            "sha256": hashlib.sha256(index).hexdigest(),
        },
    }
    https = _https_block(spec)
    if https is not None:
        transfer["https"] = https
    return {
        "_type": "model-deployment",
        "spec_version": "1.0",
        "manifest_version": spec.manifest_version,
        "issued_at": format_time(now_s),
        "expires": format_time(now_s + spec.expires_in_days * DAY_S),
        "root_version": root_version,
        "deployment_id": spec.deployment_id or f"{spec.fleet}-{spec.slot}-{spec.manifest_version}",
        "targets": {
            "fleet": spec.fleet,
            "slot": spec.slot,
            "devices": list(spec.devices) if spec.devices else None,
        },
        "compat": dict(spec.compat),
        "model": model,
        "files": [
            {"name": p.name, "length": p.stat().st_size, "sha256": sha256_file(p)} for p in files
        ],
        "transfer": transfer,
        "health": dict(spec.health),
        **({"trial": dict(spec.trial)} if spec.trial else {}),
    }


def create_bundle(
    spec: BundleSpec, keys_dir: Path, out_dir: Path, now_s: float | None = None
) -> Path:
    """Write the bundle directory; returns the path of its signed ``manifest.json``."""
    files = [spec.model, *spec.extra_files]
    names = [p.name for p in files]
    bad = [n for n in names if not SAFE_NAME_RE.match(n) or n == CHUNK_INDEX_FILE]
    if bad or len(set(names)) != len(names):
        raise CommandError(Reason.BAD_NAME, f"bundle file names must be unique and safe: {bad}")
    _https_block(spec)  # refuse a bad URL before anything is written
    require_chunk_size(spec.chunk_size)
    require_inputs(spec.model, files)
    root = load_root_file(keys_dir / "root.json")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _write_bundle(spec, keys_dir, out_dir, root, now_s)
    except BaseException:
        if created:  # nothing half-written left behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def require_chunk_size(chunk_size: int) -> None:
    """Devices refuse a manifest whose chunk size is out of range (``malformed``): so do we."""
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise CommandError(
            Reason.MALFORMED,
            f"--chunk-size must be {MIN_CHUNK}..{MAX_CHUNK} bytes (devices refuse "
            f"{chunk_size}); got {chunk_size}",
            chunk_size=chunk_size,
        )


def require_inputs(model: Path, files: Sequence[Path]) -> None:
    """Every input file readable and the model's type known, before anything is written."""
    if model.suffix not in FORMAT_BY_SUFFIX:
        known = ", ".join(sorted(FORMAT_BY_SUFFIX))
        raise CommandError(
            Reason.MALFORMED, f"unknown model type {model.suffix!r} ({model}): use {known}"
        )
    for path in files:
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise CommandError(Reason.MALFORMED, f"{path} {what}", path=str(path))
        if not os.access(path, os.R_OK):
            raise CommandError(Reason.MALFORMED, f"{path} is not readable", path=str(path))


def _write_bundle(
    spec: BundleSpec, keys_dir: Path, out_dir: Path, root: Root, now_s: float | None
) -> Path:
    files = [spec.model, *spec.extra_files]
    for path in files:
        shutil.copyfile(path, out_dir / path.name)
    index = build_chunk_index({p.name: out_dir / p.name for p in files}, spec.chunk_size)
    atomic_write_bytes(out_dir / CHUNK_INDEX_FILE, index)
    now = time.time() if now_s is None else now_s
    doc = manifest_document(spec, root.version, now, index)
    release = spec.release_set or spec.release
    siblings = bind_release_set(doc, spec.siblings, release, root) if spec.siblings else []
    signers = signers_for(keys_dir, root, "release")
    if spec.downgrade:
        signers += signers_for(keys_dir, root, "downgrade")
    envelope = sign_envelope(MANIFEST_PAYLOAD_TYPE, canonical_bytes(doc), signers)
    roots_src = keys_dir / ROOTS_DIR
    if roots_src.is_dir():
        for path in sorted(roots_src.glob("*.root.json")):
            if path.name != "1.root.json":
                (out_dir / ROOTS_DIR).mkdir(exist_ok=True)
                shutil.copyfile(path, out_dir / ROOTS_DIR / path.name)
    atomic_write_bytes(out_dir / MANIFEST_FILE, envelope.to_bytes())
    write_siblings(siblings, keys_dir, root)
    return out_dir / MANIFEST_FILE


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(Reason.MALFORMED, f"{flag} wants K=V, got {item!r}")
        out[key] = value
    return out


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bundle = sub.add_parser("bundle", help="signed model bundles").add_subparsers(
        dest="bundle_command", metavar="ACTION", required=True
    )
    create = bundle.add_parser("create", help="sign a model bundle ready to publish or copy")
    create.add_argument("--model", type=Path, required=True)
    create.add_argument("--file", dest="files", type=Path, action="append", default=[])
    create.add_argument("--slot", required=True)
    create.add_argument("--fleet", required=True)
    create.add_argument("--manifest-version", type=int, required=True)
    create.add_argument("--release", type=int, required=True)
    create.add_argument("--devices", nargs="+", default=None, metavar="ID")
    create.add_argument("--compat", action="append", default=[], metavar="K=V")
    create.add_argument(
        "--health", action="append", default=[], metavar="K=N", help=", ".join(HEALTH_KEYS)
    )
    create.add_argument("--expires-in", type=float, default=30.0, metavar="DAYS")
    create.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    create.add_argument("--deployment-id", default="")
    create.add_argument("--backend", default=None, help="backend name if not the format default")
    create.add_argument(
        "--downgrade", action="store_true", help="lower release: also sign with downgrade keys"
    )
    create.add_argument(
        "--https-url",
        default="",
        metavar="URL",
        help="https:// base URL the bundle directory will be served from (devices fetch "
        "<URL><file> with Range requests)",
    )
    create.add_argument(
        "--https-only",
        action="store_true",
        help="with --https-url: no MQTT chunk fallback (a failed HTTPS fetch fails the update)",
    )
    create.add_argument(
        "--sibling",
        dest="siblings",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="bundle of another slot released together with this one: both manifests get "
        "one signed release set (the sibling is re-signed), so devices never mix slots "
        "across releases",
    )
    create.add_argument(
        "--release-set",
        type=int,
        default=0,
        metavar="N",
        help="with --sibling: the release set's number (default: --release)",
    )
    add_trial_args(create)
    create.add_argument("--keys", type=Path, required=True, metavar="DIR")
    create.add_argument("--out", type=Path, required=True, metavar="DIR")
    create.set_defaults(func=run_create)


def run_create(args: argparse.Namespace) -> int:
    require_inputs(args.model, [args.model, *args.files])
    if args.https_only and not args.https_url:
        raise CommandError(Reason.MALFORMED, "--https-only needs --https-url")
    if args.release_set and not args.siblings:
        raise CommandError(Reason.MALFORMED, "--release-set needs --sibling")
    health_raw = _pairs(args.health, "--health")
    unknown = sorted(set(health_raw) - set(HEALTH_KEYS))
    if unknown or not all(v.isdigit() for v in health_raw.values()):
        raise CommandError(Reason.MALFORMED, f"--health keys are {HEALTH_KEYS} with integers")
    spec = BundleSpec(
        model=args.model,
        slot=args.slot,
        fleet=args.fleet,
        manifest_version=args.manifest_version,
        release=args.release,
        extra_files=args.files,
        devices=args.devices,
        compat=_pairs(args.compat, "--compat"),
        health={k: int(v) for k, v in health_raw.items()},
        expires_in_days=args.expires_in,
        chunk_size=args.chunk_size,
        deployment_id=args.deployment_id,
        downgrade=args.downgrade,
        backend=args.backend,
        https_url=args.https_url,
        mqtt_fallback=not args.https_only,
        siblings=args.siblings,
        release_set=args.release_set,
    )
    spec = with_trial(spec, args)  # golden cases computed with this model, printed for review
    path = create_bundle(spec, args.keys, args.out)
    print(f"bundle written: {path}")
    return 0
