"""Signed device commands (issue 18.1 c): a ``command`` role in root signs what changes a device.

A fleet whose trusted root lists a ``command`` role requires every command that changes
config (``SIGNED_OPS``) to carry a signed envelope: the role's threshold of signatures,
an expiry, the one device (and fleet) it is for, the op, and a ``sequence`` that must
be above the last one this device accepted (replay protection; the operator tool uses
milliseconds since the epoch, so it keeps no state). The request the device runs is
the signed ``request``, never the unsigned rest of the message. A root without the
role keeps today's behaviour: off by default. Pure: the caller persists the sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import Reason, VerificationError
from agent.update.trust.envelope import canonical_bytes, parse_envelope, sign_envelope, strict_loads
from agent.update.trust.root import Root, format_time, parse_time, positive_int

COMMAND_PAYLOAD_TYPE = "application/vnd.edgeagent.command+json"
ROLE = "command"
# Ops that change what the device runs: config (and a remote rollback, should one be added).
SIGNED_OPS = frozenset({"config", "rollback"})
MAX_COMMAND_BYTES = 60 * 1024  # inside the 64 KiB command request cap
SIGNED_FIELD = "signed"


@dataclass(frozen=True, slots=True)
class SignedCommand:
    op: str
    sequence: int
    expires_s: float
    request: dict[str, Any]


def required(root: Root, op: str) -> bool:
    """Whether ``op`` must be signed on a device that trusts ``root``."""
    return op in SIGNED_OPS and ROLE in root.roles


def make_command(
    *,
    op: str,
    device: str,
    fleet: str,
    sequence: int,
    expires_s: float,
    request: Mapping[str, Any],
    keys: Iterable[Ed25519PrivateKey],
) -> str:
    """The envelope (a JSON string) to send as ``{"signed": ...}``."""
    doc = {
        "_type": "device-command",
        "op": op,
        "device": device,
        "fleet": fleet,
        "sequence": sequence,
        "expires": format_time(expires_s),
        "request": dict(request),
    }
    return sign_envelope(COMMAND_PAYLOAD_TYPE, canonical_bytes(doc), keys).to_bytes().decode()


def verify_command(
    signed: object,
    *,
    root: Root,
    op: str,
    device: str,
    fleet: str,
    now_s: float,
    last_sequence: int,
) -> SignedCommand:
    """Signatures (command role) before parsing; then op, target, expiry and sequence."""
    if not isinstance(signed, str):
        raise VerificationError(Reason.UNSIGNED, f"{op} needs a signed command ({SIGNED_FIELD})")
    envelope = parse_envelope(signed.encode("utf-8"), MAX_COMMAND_BYTES, "command")
    if envelope.payload_type != COMMAND_PAYLOAD_TYPE:
        raise VerificationError(Reason.UNSIGNED, f"not a command: {envelope.payload_type!r}")
    root.require(envelope, ROLE)
    try:
        doc = strict_loads(envelope.payload)
        if not isinstance(doc, dict) or doc.get("_type") != "device-command":
            raise TypeError("_type must be device-command")  # noqa: TRY301 - translated below
        request = doc.get("request")
        if not isinstance(request, dict):
            raise TypeError("request must be an object")  # noqa: TRY301 - translated below
        command = SignedCommand(
            op=str(doc.get("op")),
            sequence=positive_int(doc.get("sequence"), "sequence"),
            expires_s=parse_time(doc.get("expires"), "expires"),
            request=request,
        )
        target = (str(doc.get("device")), str(doc.get("fleet")))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise VerificationError(Reason.MALFORMED, f"signed command invalid: {exc}") from exc
    if command.op != op:
        raise VerificationError(Reason.MALFORMED, f"signed for op {command.op!r}, sent as {op!r}")
    if target != (device, fleet):
        raise VerificationError(
            Reason.NOT_TARGETED, f"signed for device {target[0]!r} of fleet {target[1]!r}"
        )
    if command.expires_s <= now_s:
        raise VerificationError(Reason.EXPIRED, "the signed command has expired")
    if command.sequence <= last_sequence:
        raise VerificationError(
            Reason.ROLLBACK,
            f"sequence {command.sequence} is not above the last accepted {last_sequence} (replay)",
        )
    return command
