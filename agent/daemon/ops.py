"""Handlers the daemon plugs into the command table and the control socket."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent.config.loader import issues_from_validation
from agent.config.root import AgentConfig
from agent.errors import CommandError, Reason
from agent.uplink.commands import Handler, require

if TYPE_CHECKING:
    from agent.daemon.supervisor import Supervisor


def run_diag(sup: Supervisor, names: list[str]) -> dict[str, Any]:
    from agent.diag.runner import run_checks  # noqa: PLC0415 - diag pulls in optional runtimes

    report = run_checks(sup.loaded, names or None, live=sup.status())
    result: dict[str, Any] = report.to_json()
    return result


def validate_proposed_config(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Per-key errors of a proposed config (empty when valid). Nothing is written."""
    try:
        AgentConfig.model_validate(doc)
    except ValidationError as exc:
        return [
            {"key": i.key_path, "value": i.value, "message": i.message}
            for i in issues_from_validation(exc, {}, "command")
        ]
    return []


def build_command_handlers(sup: Supervisor) -> dict[str, Handler]:
    def ping(_req: dict[str, Any]) -> dict[str, Any]:
        return {"pong": round(sup.clock.wall_s(), 3)}

    def health_check(_req: dict[str, Any]) -> dict[str, Any]:
        sup.publish_health()
        return {"health": sup.status()["health"]}

    def diag(req: dict[str, Any]) -> dict[str, Any]:
        checks = require(req, "checks", list, [])
        if not all(isinstance(c, str) for c in checks):
            raise CommandError(Reason.MALFORMED, "checks must be a list of names")
        return {"report": run_diag(sup, checks)}

    def restart(_req: dict[str, Any]) -> dict[str, Any]:
        sup.request_restart()
        return {"restarting": True}

    def config(req: dict[str, Any]) -> dict[str, Any]:
        proposed = require(req, "config", dict)
        errors = validate_proposed_config(proposed)
        if errors:
            raise CommandError(Reason.MALFORMED, "invalid config", errors=errors)
        return {"valid": True, "errors": []}

    return {
        "ping": ping,
        "health_check": health_check,
        "diag": diag,
        "restart": restart,
        "config": config,
    }


def build_control_handlers(sup: Supervisor) -> dict[str, Handler]:
    def status(_req: dict[str, Any]) -> dict[str, Any]:
        return sup.status()

    def diag(req: dict[str, Any]) -> dict[str, Any]:
        checks = req.get("checks") or []
        if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
            return {"ok": False, "error": "malformed"}
        return {"ok": True, "report": run_diag(sup, checks)}

    return {"status": status, "diag": diag}
