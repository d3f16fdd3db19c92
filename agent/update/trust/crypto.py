"""Ed25519 signing and verification over DSSE pre-authentication encoding.

The only module of the agent that signs or verifies with ``cryptography`` (key files are
``agent/fleet/keyfiles.py``), so
the algorithm choice and the exact signed bytes are decided in one place.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

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
