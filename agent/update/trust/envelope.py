"""Signed envelopes: payload bytes plus signatures, checked before the payload is parsed.

Wire form (JSON): ``{"payloadType": T, "payload": base64(bytes), "signatures":
[{"keyid": K, "sig": hex}]}``. Signatures cover ``pae(T, bytes)``, never a
re-serialisation, so there is no canonicalisation to get wrong on the device.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import Reason, VerificationError
from agent.update.trust import crypto

MAX_SIGNATURES = 32


@dataclass(frozen=True, slots=True)
class Signature:
    keyid: str
    sig: str


@dataclass(frozen=True, slots=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        doc = {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [{"keyid": s.keyid, "sig": s.sig} for s in self.signatures],
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def _reject_float(text: str) -> Any:
    raise ValueError(f"floats are not allowed: {text}")


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def strict_loads(data: bytes) -> Any:
    """JSON without floats, NaN or duplicate keys; raises ValueError."""
    return json.loads(
        data.decode("utf-8"),
        object_pairs_hook=_no_duplicates,
        parse_float=_reject_float,
        parse_constant=_reject_constant,
    )


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """Deterministic payload: sorted keys, no whitespace, UTF-8 (OLPC-canonical for our types)."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def parse_envelope(data: bytes, max_bytes: int, what: str = "envelope") -> Envelope:
    """Parse the outer envelope only; the size cap is checked before any parsing."""
    if len(data) > max_bytes:
        raise VerificationError(
            Reason.TOO_LARGE, f"{what} is {len(data)} bytes, limit {max_bytes}", size=len(data)
        )
    try:
        return _envelope(data)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        # Garbage in the outer wrapper is indistinguishable from no valid signature.
        raise VerificationError(Reason.UNSIGNED, f"{what} is not a signed envelope: {exc}") from exc


def _envelope(data: bytes) -> Envelope:
    doc = strict_loads(data)
    payload_type = doc["payloadType"]
    payload = base64.b64decode(doc["payload"], validate=True)
    raw_sigs = doc["signatures"]
    if not isinstance(payload_type, str) or not isinstance(raw_sigs, list):
        raise TypeError("payloadType must be a string and signatures a list")
    if len(raw_sigs) > MAX_SIGNATURES:
        raise ValueError(f"more than {MAX_SIGNATURES} signatures")
    sigs = tuple(Signature(keyid=str(s["keyid"]), sig=str(s["sig"])) for s in raw_sigs)
    return Envelope(payload_type=payload_type, payload=payload, signatures=sigs)


def sign_envelope(payload_type: str, payload: bytes, keys: Iterable[Ed25519PrivateKey]) -> Envelope:
    sigs = tuple(
        Signature(keyid=crypto.private_key_id(k), sig=crypto.sign(k, payload_type, payload))
        for k in keys
    )
    return Envelope(payload_type=payload_type, payload=payload, signatures=sigs)


def valid_keyids(
    envelope: Envelope, public_keys: Mapping[str, str], allowed: Iterable[str]
) -> frozenset[str]:
    """Distinct allowed key ids with a valid signature; a key signing twice counts once."""
    allowed_set = frozenset(allowed)
    good: set[str] = set()
    for signature in envelope.signatures:
        if signature.keyid in good or signature.keyid not in allowed_set:
            continue
        public = public_keys.get(signature.keyid)
        if public is not None and crypto.verify(
            public, signature.sig, envelope.payload_type, envelope.payload
        ):
            good.add(signature.keyid)
    return frozenset(good)


def require_threshold(
    envelope: Envelope,
    public_keys: Mapping[str, str],
    allowed: Iterable[str],
    threshold: int,
    role: str,
) -> frozenset[str]:
    good = valid_keyids(envelope, public_keys, allowed)
    if len(good) < threshold:
        raise VerificationError(
            Reason.UNSIGNED,
            f"{role} signatures: {len(good)} valid of threshold {threshold}",
            role=role,
            valid=len(good),
            threshold=threshold,
        )
    return good
