"""The device side of signed commands: the trusted root decides, the sequence is persisted.

``admit`` returns the request a handler may run: the unsigned request when the fleet's
root has no ``command`` role (and none was signed), else the verified signed request.
The accepted sequence is written (atomically) before the handler runs, so a replay is
refused even when the command itself then fails. An unreadable sequence file refuses
signed commands (``trust_state_corrupt``): replay protection fails closed, as does a
root that cannot be read; a device provisioned with no root file at all has no policy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.errors import CommandError, Reason, UpdateError
from agent.fsutil import atomic_write_json
from agent.log import get_logger
from agent.update.store.truststore import TrustStore
from agent.update.trust.command import SIGNED_FIELD, required, verify_command

log = get_logger(__name__)

SEQUENCE_FILE = "command_sequence.json"


class CommandGate:
    def __init__(self, trust: TrustStore, device: str, fleet: str) -> None:
        self.trust = trust
        self.device = device
        self.fleet = fleet
        self.path: Path = trust.dir / SEQUENCE_FILE

    def last_sequence(self) -> int:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise CommandError(Reason.TRUST_STATE_CORRUPT, f"{self.path}: {exc}") from exc
        value = doc.get("sequence") if isinstance(doc, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CommandError(Reason.TRUST_STATE_CORRUPT, f"{self.path}: no sequence")
        return value

    def _has_root(self) -> bool:
        return self.trust.root_path.exists() or self.trust.provisioned_root.exists()

    def admit(self, op: str, req: dict[str, Any], now_s: float) -> dict[str, Any]:
        """The request ``op``'s handler may run, or CommandError with the contract reason."""
        # One command worker thread runs handlers: read, check and write need no lock.
        if SIGNED_FIELD not in req and not self._has_root():
            return req  # a device provisioned without any root has no command policy
        try:
            root = self.trust.load_root()
            if not required(root, op) and SIGNED_FIELD not in req:
                return req
            command = verify_command(
                req.get(SIGNED_FIELD),
                root=root,
                op=op,
                device=self.device,
                fleet=self.fleet,
                now_s=now_s,
                last_sequence=self.last_sequence(),
            )
        except UpdateError as exc:
            log.warning("signed_command_refused", op=op, reason=exc.reason.value)
            raise CommandError(exc.reason, exc.message) from exc
        self.trust.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"sequence": command.sequence}, mode=0o600)
        log.info("signed_command_accepted", op=op, sequence=command.sequence)
        return command.request
