"""Operator actions: described first, carried out only after a confirmation.

An action is checked and described (which bundle, which manifest version, which devices)
when the operator asks; the description is kept under a random id and carried out when
the same session confirms that id. Bundles are read from the console's ``--bundles``
directory only, by name: a form can never name another path.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.fleet.console.rollouts import Deployments
from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import ServedBundle, load_bundle
from agent.update.store.bundle import MANIFEST_FILE
from agent.update.transfer.wire import Topics

COMMAND_OPS = ("ping", "diag", "snapshot")
PENDING_S = 300.0


class ActionError(AgentError):
    """An action the console refuses: shown to the operator, nothing sent."""


@dataclass
class Pending:
    kind: str
    session: str
    summary: list[str]
    params: dict[str, Any]
    expires: float = field(default_factory=lambda: time.monotonic() + PENDING_S)


def list_bundles(directory: Path | None) -> list[dict[str, Any]]:
    """Bundles under ``directory`` (one level), newest manifest version first."""
    if directory is None or not directory.is_dir():
        return []
    found: list[dict[str, Any]] = []
    for path in sorted(directory.iterdir()):
        if not (path / MANIFEST_FILE).is_file():
            continue
        try:
            manifest = load_bundle(path).manifest
        except AgentError as exc:
            found.append({"name": path.name, "error": str(exc)})
            continue
        found.append(
            {
                "name": path.name,
                "deployment_id": manifest.deployment_id,
                "fleet": manifest.fleet,
                "slot": manifest.slot,
                "manifest_version": manifest.manifest_version,
                "release": manifest.release,
                "devices": list(manifest.devices or []),
            }
        )
    return sorted(found, key=lambda b: -int(b.get("manifest_version") or 0))


class Actions:
    def __init__(
        self, client: FleetClient, topics: Topics, deployments: Deployments, bundles: Path | None
    ) -> None:
        self._client = client
        self._topics = topics
        self.deployments = deployments
        self.bundles_dir = bundles
        self._pending: dict[str, Pending] = {}
        self._lock = threading.Lock()
        self.commands: list[dict[str, Any]] = []  # sent from here, newest last (bounded)

    def _bundle(self, name: str) -> ServedBundle:
        if self.bundles_dir is None:
            raise ActionError("the console was started without --bundles DIR")
        if not name or "/" in name or name.startswith("."):
            raise ActionError(f"no bundle named {name!r}")
        path = self.bundles_dir / name
        if not (path / MANIFEST_FILE).is_file():
            raise ActionError(f"no bundle named {name!r} in {self.bundles_dir}")
        return load_bundle(path)

    def describe(self, session: str, form: dict[str, list[str]]) -> tuple[str, Pending]:
        kind = (form.get("action") or [""])[0]
        one = {k: v[0] for k, v in form.items() if v}
        if kind in ("publish", "rollout"):
            names = form.get("bundle", [])
            if not names:
                raise ActionError("choose at least one bundle")
            bundles = sorted((self._bundle(n) for n in names), key=_version)
            if kind == "publish" and len(bundles) != 1:
                raise ActionError("publish takes exactly one bundle; a rollout takes several")
            if len({(b.manifest.fleet, b.manifest.slot) for b in bundles}) != 1:
                raise ActionError("every stage of a rollout must be for the same fleet and slot")
            limit = int(one.get("halt_on_failures") or 1)
            if limit < 1:
                raise ActionError("halt on failures must be 1 or more")
            summary = [
                f"{'stage ' + str(i + 1) + ': ' if len(bundles) > 1 else ''}"
                f"{b.directory.name}: deployment {b.deployment_id}, manifest "
                f"v{b.manifest.manifest_version}, release {b.manifest.release}, slot "
                f"{b.manifest.slot}, fleet {b.manifest.fleet}, devices "
                f"{' '.join(b.manifest.devices) if b.manifest.devices else 'every member'}"
                for i, b in enumerate(bundles)
            ]
            if len(bundles) > 1:
                summary.append(f"halt when a stage has {limit} failure(s) or a device is silent")
            params = {"bundles": [b.directory.name for b in bundles], "limit": limit}
        elif kind == "halt":
            rollout = self.deployments.get(one.get("rollout", ""))
            if rollout is None:
                raise ActionError("no such rollout")
            summary = [f"halt rollout {rollout.id}: no further stage starts"]
            params = {"rollout": rollout.id}
        elif kind == "command":
            device, op = one.get("device", ""), one.get("op", "")
            if op not in COMMAND_OPS:
                raise ActionError(f"command must be one of {', '.join(COMMAND_OPS)}")
            if not device or any(c in device for c in "/+#"):
                raise ActionError("no such device")
            summary = [f"send {op} to {device}"]
            params = {"device": device, "op": op}
        else:
            raise ActionError(f"unknown action {kind!r}")
        pending = Pending(kind, session, summary, params)
        token = secrets.token_urlsafe(16)
        with self._lock:
            now = time.monotonic()
            for key in [k for k, p in self._pending.items() if p.expires < now]:
                del self._pending[key]
            self._pending[token] = pending
        return token, pending

    def confirm(self, session: str, token: str) -> str:
        """Carry out a described action; returns where the operator goes next."""
        with self._lock:
            pending = self._pending.pop(token, None)
        if pending is None or pending.session != session or pending.expires < time.monotonic():
            raise ActionError("this confirmation has expired; ask again")
        params = pending.params
        if pending.kind in ("publish", "rollout"):
            bundles = [self._bundle(name) for name in params["bundles"]]
            rollout = self.deployments.start(bundles, params["limit"])
            return f"/deployments#{rollout.id}"
        if pending.kind == "halt":
            self.deployments.halt(params["rollout"])
            return "/deployments"
        return f"/device/{self.send_command(params['device'], params['op'])}"

    def send_command(self, device: str, op: str, body: dict[str, Any] | None = None) -> str:
        cmd_id = uuid.uuid4().hex[:12]
        payload = json.dumps({"sender": "console", **(body or {})}).encode()
        self._client.publish_wait(self._topics.cmd(device, op, cmd_id), payload)
        with self._lock:
            self.commands.append({"device": device, "op": op, "cmd_id": cmd_id, "ts": time.time()})
            del self.commands[:-200]
        return device


def _version(bundle: ServedBundle) -> int:
    return bundle.manifest.manifest_version
