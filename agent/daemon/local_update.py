"""``edge-agent update install|rollback|recover`` through the running daemon's control socket.

With the daemon up, the on-disk pointers are its business: a CLI that changed them behind
its back left ``update status`` saying v1 while the pipeline served v4, and an install from
the CLI racing one over MQTT mixed the journal, ``current`` and the served model. So the
CLI asks the daemon (``update_install``, ``update_rollback``, ``update_recover``), which runs
them with the installer and live probe of its MQTT updates: the same checks, the pipeline
reloaded, the journal written, under the one install lock (``agent.update.store.lock``).
The CLI works on disk only when no daemon holds the state dir, and takes the lock too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.errors import AgentError, CommandError, Reason, UpdateError
from agent.log import get_logger
from agent.update.store.installer import Installer
from agent.update.store.outcome import InstallResult

log = get_logger(__name__)

# How long a local command waits for an install in progress before it is refused.
LOCK_WAIT_S = 10.0
# Client side: an install runs its whole trial before the daemon answers.
INSTALL_TIMEOUT_S = 3600.0
ROLLBACK_TIMEOUT_S = 300.0

Handler = Callable[[dict[str, Any]], dict[str, Any]]
InstallFromDir = Callable[[Installer, Path], InstallResult]


def result_doc(result: InstallResult) -> dict[str, Any]:
    doc = dataclasses.asdict(result)
    doc["reason"] = result.reason.value if result.reason else None
    return doc


def result_from_doc(doc: dict[str, Any]) -> InstallResult:
    fields = {f.name for f in dataclasses.fields(InstallResult)}
    values = {k: v for k, v in doc.items() if k in fields}
    values["reason"] = Reason(doc["reason"]) if doc.get("reason") else None
    return InstallResult(**values)


def error_reply(exc: AgentError) -> dict[str, Any]:
    """A refused local command, with the reason code the CLI prints and exits with."""
    reason = getattr(exc, "reason", None)
    return {
        "ok": False,
        "error": "refused",
        "reason": reason.value if isinstance(reason, Reason) else None,
        "detail": exc.message,
    }


def error_from_reply(reply: dict[str, Any]) -> AgentError:
    """The CLI side of ``error_reply``: the same error family the on-disk path raises."""
    detail = str(reply.get("detail") or reply.get("error") or "refused by the daemon")
    try:
        reason = Reason(str(reply.get("reason")))
    except ValueError:
        return AgentError(f"the daemon refused: {detail}")
    return UpdateError(reason, detail)  # printed "reason: detail", as on the on-disk path


def pick_slot(requested: str | None, slots: list[str]) -> str:
    if requested is not None:
        return requested
    if len(slots) != 1:
        raise CommandError(Reason.MALFORMED, f"name the slot to roll back: {', '.join(slots)}")
    return slots[0]


def build_update_handlers(
    installer: Installer, slots: list[str], install_from_dir: InstallFromDir
) -> dict[str, Handler]:
    """Control-socket handlers; each holds the install lock for its whole sequence."""

    def guarded(what: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            with installer.install_lock.held(LOCK_WAIT_S):
                reply = step()
        except AgentError as exc:
            log.warning("local_update_refused", op=what, error=str(exc))
            return error_reply(exc)
        return {"ok": True, **reply}

    def install(req: dict[str, Any]) -> dict[str, Any]:
        bundle = req.get("bundle")
        if not isinstance(bundle, str) or not Path(bundle).is_absolute():
            return error_reply(CommandError(Reason.MALFORMED, "bundle must be an absolute path"))
        log.info("local_update_install", bundle=bundle)
        return guarded(
            "install", lambda: {"result": result_doc(install_from_dir(installer, Path(bundle)))}
        )

    def rollback(req: dict[str, Any]) -> dict[str, Any]:
        requested = req.get("slot")
        if requested is not None and not isinstance(requested, str):
            return error_reply(CommandError(Reason.MALFORMED, "slot must be a name"))

        def step() -> dict[str, Any]:
            slot = pick_slot(requested, slots)
            log.info("local_update_rollback", slot=slot)
            return {"result": result_doc(installer.operator_rollback(slot))}

        return guarded("rollback", step)

    def recover(_req: dict[str, Any]) -> dict[str, Any]:
        return guarded("recover", lambda: {"results": [result_doc(r) for r in installer.recover()]})

    return {"update_install": install, "update_rollback": rollback, "update_recover": recover}
