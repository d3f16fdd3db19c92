"""``diag --bundle DIR``: one redacted ``.tar.gz`` a technician can send as it is.

Two layers keep secrets out: the config goes through ``redacted_dump`` (and URL
credentials are cut), then every member is scrubbed of the resolved secret values
before it is written, in case one leaked into a log line.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent.config import AgentConfig, LoadedConfig, redacted_dump, resolve_secret
from agent.config.loader import REDACTED
from agent.diag import ondisk, updates
from agent.diag.report import DiagReport
from agent.diag.system import CommandRunner, run_command
from agent.errors import AgentError
from agent.fsutil import fsync_dir
from agent.log import RING_FILE

JOURNAL_LINES = 2000
BUNDLE_MODE = 0o600  # logs and config of a device: for the technician, not for everyone


def strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def secret_values(cfg: AgentConfig) -> list[str]:
    """Every secret as it could appear in text: the raw value and what a file: ref holds."""
    found = []
    for secret, key in (
        (cfg.mqtt.password, "mqtt.password"),
        (cfg.mqtt.key_password, "mqtt.key_password"),
    ):
        raw = secret.get_secret_value()
        found.append(raw)
        try:
            found.append(resolve_secret(secret, key))
        except AgentError:
            continue
    url = urlsplit(cfg.mqtt.url)
    found.append(url.password or "")
    # Longest first, so a secret containing another is replaced whole.
    return sorted({s for s in found if s and not s.startswith("file:")}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def config_document(loaded: LoadedConfig | None) -> dict[str, Any]:
    if loaded is None:
        return {"error": "no valid configuration loaded"}
    doc = redacted_dump(loaded.config)
    doc["mqtt"]["url"] = strip_userinfo(loaded.config.mqtt.url)
    return {
        "path": str(loaded.path) if loaded.path else None,
        "profile": loaded.profile,
        "effective": doc,
    }


def journal_text(runner: CommandRunner) -> str:
    argv = [
        "journalctl",
        "-u",
        "edge-agent",
        "-n",
        str(JOURNAL_LINES),
        "--no-pager",
        "-o",
        "short-iso",
    ]
    try:
        code, out = runner(argv)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"# journalctl unavailable: {exc}\n"
    if code != 0 and not out:
        return f"# journalctl exited {code}\n"
    return out


def agent_log_text(state_dir: Path) -> str:
    """The daemon's own recent log (the ring file and its rotated copy, oldest first)."""
    ring = state_dir / RING_FILE
    parts = []
    for path in (ring.with_name(ring.name + ".1"), ring):
        try:
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return "".join(parts) or f"# no agent log at {ring} (the daemon has not run here)\n"


def update_document(cfg: AgentConfig) -> dict[str, Any]:
    try:
        status = updates.read_update_status(Path(cfg.storage.state_dir), Path(cfg.trust.root))
    except AgentError as exc:
        return {"error": str(exc)}
    return status if status is not None else {"error": "update support not installed"}


def members(
    report: DiagReport, loaded: LoadedConfig | None, runner: CommandRunner
) -> dict[str, str]:
    cfg = loaded.config if loaded is not None else AgentConfig()

    def dumps(doc: Any) -> str:
        return json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"

    return {
        "checks.json": dumps(report.to_json()),
        "config.json": dumps(config_document(loaded)),
        "journal.log": journal_text(runner),
        "agent.log": agent_log_text(Path(cfg.storage.state_dir)),
        "update_status.json": dumps(update_document(cfg)),
        "outbox.json": dumps(ondisk.outbox_summary(Path(cfg.storage.state_dir))),
        "version.json": dumps(ondisk.version_info()),
    }


def bundle_name(device_id: str, now: dt.datetime) -> str:
    return f"edge-agent-diag-{device_id}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def write_bundle(
    out_dir: Path,
    report: DiagReport,
    loaded: LoadedConfig | None,
    runner: CommandRunner = run_command,
    now: dt.datetime | None = None,
) -> Path:
    """Write the bundle into ``out_dir`` (created if needed) and return its path."""
    cfg = loaded.config if loaded is not None else AgentConfig()
    stem = bundle_name(cfg.device.id, now or dt.datetime.now(dt.timezone.utc))
    secrets = secret_values(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{stem}.tar.gz"
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                for name, text in members(report, loaded, runner).items():
                    data = scrub(text, secrets).encode("utf-8")
                    info = tarfile.TarInfo(f"{stem}/{name}")
                    info.size = len(data)
                    info.mtime = int(time.time())
                    info.mode = 0o600
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        Path(tmp_name).chmod(BUNDLE_MODE)
        Path(tmp_name).replace(target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(out_dir)
    return target
