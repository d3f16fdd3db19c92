"""Ed25519 signing and verification over DSSE pre-authentication encoding.

The only module of the agent that imports ``cryptography`` for signatures, so
the algorithm choice and the exact signed bytes are decided in one place.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import Reason, VerificationError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: binds the payload type to the exact payload bytes."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_raw: bytes) -> str:
    """Key id = SHA-256 of the raw 32-byte public key, hex."""
    return hashlib.sha256(public_raw).hexdigest()


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def private_key_id(private: Ed25519PrivateKey) -> str:
    return key_id(public_raw(private))


def sign(private: Ed25519PrivateKey, payload_type: str, payload: bytes) -> str:
    """Signature (hex) over ``pae(payload_type, payload)``."""
    return private.sign(pae(payload_type, payload)).hex()


def verify(public_hex: str, signature_hex: str, payload_type: str, payload: bytes) -> bool:
    """True when ``signature_hex`` is a valid Ed25519 signature; malformed input is just False."""
    try:
        raw = bytes.fromhex(public_hex)
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        return False
    if len(raw) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, pae(payload_type, payload))
    except (InvalidSignature, ValueError):
        return False
    return True


def save_private_key(path: Path, private: Ed25519PrivateKey) -> None:
    """PKCS#8 PEM, created 0600 so the key is never world-readable, even for a moment."""
    data = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise VerificationError(
            Reason.UNSIGNED, f"cannot read private key {path}: {exc}", path=str(path)
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise VerificationError(Reason.UNSIGNED, f"{path} is not an Ed25519 key", path=str(path))
    return key
