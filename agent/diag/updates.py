"""``trust`` and ``update``: the provisioned root and the update journal's state."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.diag.report import CheckResult, fail, ok, warn
from agent.diag.system import iso
from agent.errors import AgentError

ROOT_EXPIRY_WARN_S = 30 * 86400.0
BUSY_PHASES = frozenset({"verified", "staged", "activating", "trial", "rolling_back"})
BROKEN_PHASES = frozenset({"inconsistent"})


def check_trust(root_path: Path, now_wall_s: float) -> CheckResult:
    try:
        from agent.update.store.truststore import load_root_file  # noqa: PLC0415 - updates are optional
    except ImportError as exc:
        return warn(
            "trust", f"update support not installed ({exc})", "reinstall edge-agent completely"
        )
    if not root_path.exists():
        return fail(
            "trust",
            f"trust root {root_path} is missing",
            "provision it out of band: copy root.json from `edge-fleet keys init` to trust.root",
            path=str(root_path),
        )
    try:
        root = load_root_file(root_path)
    except AgentError as exc:
        return fail(
            "trust",
            f"trust root {root_path} is invalid: {exc}",
            "re-provision root.json from the fleet operator; do not edit it by hand",
            path=str(root_path),
        )
    data = {"path": str(root_path), "root_version": root.version, "expires": iso(root.expires_s)}
    left_s = root.expires_s - now_wall_s
    if left_s < 0:
        return warn(
            "trust",
            f"root v{root.version} expired on {iso(root.expires_s)}",
            "the fleet operator must rotate the root (edge-fleet root rotate)",
            **data,
        )
    if left_s < ROOT_EXPIRY_WARN_S:
        return warn(
            "trust",
            f"root v{root.version} expires in {left_s / 86400:.0f} days",
            "ask the fleet operator to rotate the root soon",
            **data,
        )
    keys = len(root.keys)
    return ok(
        "trust", f"root v{root.version}, {keys} key(s), valid until {iso(root.expires_s)}", **data
    )


def as_plain(value: Any) -> Any:
    """The journal's status object as JSON-ready data, whatever its Python shape."""
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def read_update_status(state_dir: Path, root_path: Path) -> dict[str, Any] | None:
    """``agent.update.store.journal.read_status`` as a dict; None when updates are not installed."""
    try:
        # By name: the update journal is optional in a base install.
        journal = importlib.import_module("agent.update.store.journal")
    except ImportError:
        return None
    plain = as_plain(journal.read_status(state_dir, root_path))
    return dict(plain) if isinstance(plain, Mapping) else {"status": plain}


def active_label(active: Mapping[str, Any]) -> str:
    """Both numbers, labelled: ``update status`` shows the manifest version, models the release."""
    release, manifest = active.get("release"), active.get("manifest_version")
    parts = [f"release {release}"] if release is not None else []
    parts += [f"manifest v{manifest}"] if manifest is not None else []
    return ", ".join(parts) or "config model"


def slot_status_line(slot: str, info: Mapping[str, Any]) -> str:
    """One ``update status`` line: phase, active versions (labelled), last result if any."""
    active = info.get("active") or {}
    last = info.get("last_result") or {}
    line = f"{slot}: phase {info.get('phase') or 'idle'}, active {active_label(active)}"
    if last.get("outcome"):
        line += f", last {last['outcome']}" + (f" ({last['reason']})" if last.get("reason") else "")
    return line


def judge_update(status: Mapping[str, Any]) -> CheckResult:
    slots = status.get("slots") or {}
    if not isinstance(slots, Mapping) or not slots:
        return ok("update", "no model update installed yet; config models in use", status=status)
    parts, busy, failed, broken = [], [], [], []
    for slot, info in sorted(slots.items()):
        info_map = info if isinstance(info, Mapping) else {}
        active = info_map.get("active") or {}
        phase = str(info_map.get("phase") or "idle")
        last = info_map.get("last_result") or {}
        parts.append(f"{slot}: {active_label(active)} ({phase})")
        if phase in BROKEN_PHASES:
            broken.append(
                f"{slot} is {phase}: {info_map.get('detail') or 'store and journal disagree'}"
            )
        if phase in BUSY_PHASES:
            busy.append(f"{slot} in {phase}")
        if last.get("outcome") in ("failed", "rolled_back"):
            failed.append(f"{slot} last update {last.get('outcome')}: {last.get('reason')}")
    detail = ", ".join(parts)
    if broken:
        return fail(
            "update",
            f"{detail}; " + "; ".join(broken),
            "`edge-agent update rollback SLOT` restores the previous model; send the bundle",
            status=status,
        )
    if busy:
        return warn(
            "update",
            f"{detail}; " + "; ".join(busy),
            "a slot left in trial is committed or rolled back by the daemon; "
            "if it stays, `edge-agent update rollback SLOT`",
            status=status,
        )
    if failed:
        return ok("update", f"{detail}; " + "; ".join(failed), status=status)
    return ok("update", detail, status=status)


def check_update(state_dir: Path, root_path: Path) -> CheckResult:
    try:
        status = read_update_status(state_dir, root_path)
    except AgentError as exc:
        return fail(
            "update",
            f"update journal unreadable: {exc}",
            "the state directory may be damaged; see `edge-agent update status`",
        )
    if status is None:
        return warn("update", "update support not installed", "reinstall edge-agent completely")
    return judge_update(status)
