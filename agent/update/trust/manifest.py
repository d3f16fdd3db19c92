"""Deployment manifest: strict parsing of the signed payload into frozen dataclasses.

Pure. Signatures are checked before this runs (``verify.py``); this only decides
whether the bytes describe a well-formed deployment with safe file names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agent.errors import Reason, VerificationError
from agent.update.trust.envelope import strict_loads
from agent.update.trust.releaseset import ReleaseSet, member_digest, parse_release_set
from agent.update.trust.root import SPEC_MAJOR, parse_time, positive_int
from agent.update.trust.trialspec import TrialSpec, parse_trial

MANIFEST_PAYLOAD_TYPE = "application/vnd.edgeagent.deployment+json"
MAX_MANIFEST_BYTES = 64 * 1024
MAX_FILES = 16
# A file name is one path component: no separators, no leading dot, nothing to escape with.
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SLOT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
FORMATS = ("tflite", "onnx", "tensorrt-engine")
MIN_CHUNK = 1024
MAX_CHUNK = 1024 * 1024
MAX_URL_CHARS = 2048
_HTTPS_KEYS = frozenset({"url", "mqtt_fallback"})
# Printable ASCII without space, quotes, angle brackets or backslash: nothing a header
# or a log line could be split with, nothing that needs escaping to reach the server.
_URL_CHARS_RE = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    length: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Health:
    max_attempts: int = 3
    smoke_inferences: int = 3
    max_latency_ms: int = 2000
    trial_s: int = 60
    # Expected shapes of every output, when the manifest pins them.
    output_shapes: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True, slots=True)
class HttpsSource:
    """Where the bundle files can be fetched over HTTPS: ``<url><file name>`` per file.

    ``url`` is a base ending in ``/``; the chunk index is at ``<url><chunk_index.name>``.
    ``mqtt_fallback``: the operator also serves chunks over MQTT, so a device whose
    HTTPS fetch fails for good (TLS, HTTP error, host not allowed) pulls chunks instead.
    """

    url: str
    mqtt_fallback: bool = True

    def file_url(self, name: str) -> str:
        return self.url + name


@dataclass(frozen=True, slots=True)
class Manifest:
    manifest_version: int
    issued_at_s: float
    expires_s: float
    root_version: int
    deployment_id: str
    fleet: str
    slot: str
    devices: tuple[str, ...] | None
    compat: dict[str, str]
    release: int
    model_format: str
    backend: str
    downgrade: bool
    model_file: str
    files: tuple[FileEntry, ...]
    chunk_size: int
    chunk_index: FileEntry
    health: Health = field(default_factory=Health)
    https: HttpsSource | None = None
    # Golden cases run before activation and the shadow trial's thresholds (trialspec.py).
    trial: TrialSpec = field(default_factory=TrialSpec)
    # Slots released together (releaseset.py); None for a manifest that stands alone.
    release_set: ReleaseSet | None = None

    @property
    def total_length(self) -> int:
        return sum(f.length for f in self.files)

    def file(self, name: str) -> FileEntry:
        for entry in self.files:
            if entry.name == name:
                return entry
        raise KeyError(name)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{where} must be an object")
    return value


def _str(value: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise ValueError(f"{where} is missing or malformed")
    return value


def _file_entry(raw: Any, where: str) -> FileEntry:
    doc = _obj(raw, where)
    name = doc.get("name")
    if not isinstance(name, str) or not SAFE_NAME_RE.match(name):
        raise VerificationError(Reason.BAD_NAME, f"{where}: unsafe file name {name!r}", name=name)
    length = doc.get("length")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"{where}.length must be a non-negative integer")
    return FileEntry(name=name, length=length, sha256=_str(doc.get("sha256"), where, _HEX64))


def check_https_url(url: Any, where: str = "transfer.https.url") -> str:
    """A base URL the device may fetch from: ValueError unless it is strictly safe.

    https only, a host, no user info (credentials never go into a signed, retained
    manifest), no query or fragment (file names are appended), a path ending in ``/``.
    """
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_CHARS:
        raise ValueError(f"{where} must be a string of 1..{MAX_URL_CHARS} characters")
    if not _URL_CHARS_RE.match(url):
        raise ValueError(f"{where} contains characters that are not allowed in a URL")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError(f"{where} must be an https:// URL")
    if "@" in parts.netloc:
        raise ValueError(f"{where} must not carry credentials")
    if not parts.hostname:
        raise ValueError(f"{where} has no host")
    try:
        _ = parts.port  # ValueError when out of range or not a number
    except ValueError as exc:
        raise ValueError(f"{where} has an invalid port") from exc
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"{where} must not have a query or fragment")
    if not parts.path.endswith("/"):
        raise ValueError(f"{where} must end with / (file names are appended)")
    return url


def _https(raw: Any) -> HttpsSource | None:
    if raw is None:
        return None
    doc = _obj(raw, "transfer.https")
    unknown = sorted(set(doc) - _HTTPS_KEYS)
    if unknown:
        raise ValueError(f"transfer.https has unknown fields {unknown}")
    fallback = doc.get("mqtt_fallback", True)
    if not isinstance(fallback, bool):
        raise TypeError("transfer.https.mqtt_fallback must be a boolean")
    return HttpsSource(url=check_https_url(doc.get("url")), mqtt_fallback=fallback)


def _health(raw: Any) -> Health:
    doc = _obj(raw if raw is not None else {}, "health")
    shapes = doc.get("output_shapes")
    parsed: tuple[tuple[int, ...], ...] | None = None
    if shapes is not None:
        if not isinstance(shapes, list) or not all(isinstance(s, list) for s in shapes):
            raise ValueError("health.output_shapes must be a list of lists")
        parsed = tuple(tuple(positive_int(d, "output_shapes[]") for d in s) for s in shapes)
    default = Health()
    return Health(
        max_attempts=positive_int(doc.get("max_attempts", default.max_attempts), "max_attempts"),
        smoke_inferences=positive_int(
            doc.get("smoke_inferences", default.smoke_inferences), "smoke_inferences"
        ),
        max_latency_ms=positive_int(
            doc.get("max_latency_ms", default.max_latency_ms), "max_latency_ms"
        ),
        trial_s=positive_int(doc.get("trial_s", default.trial_s), "trial_s"),
        output_shapes=parsed,
    )


def parse_manifest(payload: bytes) -> Manifest:
    """Parse an already signature-checked payload; unknown optional fields are tolerated."""
    if len(payload) > MAX_MANIFEST_BYTES:
        raise VerificationError(Reason.TOO_LARGE, f"manifest payload is {len(payload)} bytes")
    try:
        return _parse(payload)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise VerificationError(Reason.MALFORMED, f"manifest invalid: {exc}") from exc


def _parse(payload: bytes) -> Manifest:
    doc = _obj(strict_loads(payload), "manifest")
    if doc.get("_type") != "model-deployment":
        raise ValueError("_type must be model-deployment")
    if str(doc.get("spec_version", "")).split(".")[0] != SPEC_MAJOR:
        raise ValueError(f"unsupported spec_version {doc.get('spec_version')!r}")
    targets = _obj(doc.get("targets"), "targets")
    devices_raw = targets.get("devices")
    devices: tuple[str, ...] | None = None
    if devices_raw is not None:
        if not isinstance(devices_raw, list) or not devices_raw:
            raise ValueError("targets.devices must be a non-empty list or null")
        devices = tuple(_str(d, "targets.devices[]", _ID_RE) for d in devices_raw)
    compat_raw = _obj(doc.get("compat", {}), "compat")
    compat = {str(k): _str(v, f"compat.{k}") for k, v in compat_raw.items() if v is not None}
    model = _obj(doc.get("model"), "model")
    model_format = _str(model.get("format"), "model.format")
    if model_format not in FORMATS:
        raise ValueError(f"model.format must be one of {FORMATS}")
    downgrade = model.get("downgrade", False)
    if not isinstance(downgrade, bool):
        raise TypeError("model.downgrade must be a boolean")
    raw_files = doc.get("files")
    if not isinstance(raw_files, list) or not 1 <= len(raw_files) <= MAX_FILES:
        raise ValueError(f"files must list 1 to {MAX_FILES} entries")
    files = tuple(_file_entry(f, f"files[{i}]") for i, f in enumerate(raw_files))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ValueError("files lists a name twice")
    model_file = model.get("file")
    if not isinstance(model_file, str) or not SAFE_NAME_RE.match(model_file):
        raise VerificationError(Reason.BAD_NAME, f"unsafe model file {model_file!r}")
    if model_file not in names:
        raise ValueError(f"model.file {model_file!r} is not in files")
    transfer = _obj(doc.get("transfer"), "transfer")
    chunk_size = positive_int(transfer.get("chunk_size"), "transfer.chunk_size")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"transfer.chunk_size must be {MIN_CHUNK}..{MAX_CHUNK}")
    chunk_index = _file_entry(transfer.get("chunk_index"), "transfer.chunk_index")
    if chunk_index.name in names:
        raise ValueError("transfer.chunk_index must not be one of the files")
    return Manifest(
        manifest_version=positive_int(doc.get("manifest_version"), "manifest_version"),
        issued_at_s=parse_time(doc.get("issued_at"), "issued_at"),
        expires_s=parse_time(doc.get("expires"), "expires"),
        root_version=positive_int(doc.get("root_version"), "root_version"),
        deployment_id=_str(doc.get("deployment_id"), "deployment_id", _ID_RE),
        fleet=_str(targets.get("fleet"), "targets.fleet", _ID_RE),
        slot=_str(targets.get("slot"), "targets.slot", _SLOT_RE),
        devices=devices,
        compat=compat,
        release=positive_int(model.get("release"), "model.release"),
        model_format=model_format,
        backend=_str(model.get("backend", _default_backend(model_format)), "model.backend"),
        downgrade=downgrade,
        model_file=model_file,
        files=files,
        chunk_size=chunk_size,
        chunk_index=chunk_index,
        health=_health(doc.get("health")),
        https=_https(transfer.get("https")),
        trial=parse_trial(doc.get("trial"), {f.name: f.length for f in files}, model_file),
        release_set=parse_release_set(
            doc.get("release_set"), str(targets.get("slot")), member_digest(doc)
        ),
    )


def _default_backend(model_format: str) -> str:
    return {"tflite": "tflite", "onnx": "onnx"}.get(model_format, "tensorrt")
