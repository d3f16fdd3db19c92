"""Operator-side signing key files: PKCS#8 PEM on disk (IO kept out of the pure trust chain)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import Reason, VerificationError


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
